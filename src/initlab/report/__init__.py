"""Turn a sweep (or one run) into report.md and PNG figures: the paper's tables and figures."""

from initlab.report.collect import Run, collect_runs
from initlab.report.write import write_report

__all__ = ["Run", "collect_runs", "write_report"]
