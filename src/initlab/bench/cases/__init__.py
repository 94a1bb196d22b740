"""The bench's cases, one module each: ``case(settings, data_dir, out) -> dict`` of figures
(``ratios``, ``seconds``, ``spread`` and what else the case measures)."""

from initlab.bench.cases.compile import case_compile
from initlab.bench.cases.data import case_data
from initlab.bench.cases.formats import case_formats
from initlab.bench.cases.framework import case_framework_and_monitors
from initlab.bench.cases.jacobian import case_jacobian
from initlab.bench.cases.monitors import case_monitors
from initlab.bench.cases.shapeset import case_shapeset
from initlab.bench.cases.speedrun import case_speedrun
from initlab.bench.cases.startup import case_startup
from initlab.bench.cases.whole import case_whole

CASES = {"framework": case_framework_and_monitors, "data": case_data,
         "speedrun": case_speedrun, "startup": case_startup, "compile": case_compile,
         "jacobian": case_jacobian, "whole": case_whole, "shapeset": case_shapeset,
         "formats": case_formats, "monitors": case_monitors}
DEFAULT_CASES = ["framework", "data", "speedrun", "startup", "jacobian"]
