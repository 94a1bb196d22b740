from initlab.monitors.callbacks import (
    GradNormMonitor,
    ProbeMonitor,
    TrainClock,
    UpdateRatioMonitor,
)
from initlab.monitors.evaluation import (
    GradientNoiseMonitor,
    TrainSubsetAccuracy,
    UnitAblation,
    WeightSummary,
)
from initlab.monitors.stats import probe

__all__ = ["GradNormMonitor", "GradientNoiseMonitor", "ProbeMonitor", "TrainClock",
           "TrainSubsetAccuracy", "UnitAblation", "UpdateRatioMonitor", "WeightSummary",
           "probe"]
