from initlab.monitors.callbacks import (
    GradientNoiseMonitor,
    GradNormMonitor,
    ProbeMonitor,
    TrainClock,
    UpdateRatioMonitor,
    WeightSummary,
)
from initlab.monitors.evaluation import TrainSubsetAccuracy, UnitAblation
from initlab.monitors.stats import probe

__all__ = ["GradNormMonitor", "GradientNoiseMonitor", "ProbeMonitor", "TrainClock",
           "TrainSubsetAccuracy", "UnitAblation", "UpdateRatioMonitor", "WeightSummary",
           "probe"]
