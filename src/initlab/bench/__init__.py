"""Speed of initlab against hand-written PyTorch, measured as ratios in one process.

``run`` runs the cases and writes bench.json; ``scripts/bench.py`` is its command line. The
modules: ``cases`` (one module per case), ``common`` (settings, configs, synthetic data),
``timing`` (variants in rounds, medians and spreads), ``baselines`` (the hand-written loop and a
minimal LightningModule), ``pairing`` (a fit alternated with a raw loop, and the statistics of
the pairs), ``report`` (the table), ``runner`` (the cases in turn, then the table and the
JSON)."""

from initlab.bench.common import Settings
from initlab.bench.runner import run

__all__ = ["Settings", "run"]
