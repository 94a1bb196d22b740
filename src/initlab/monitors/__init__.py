from initlab.monitors.callbacks import (
    GradNormMonitor,
    ProbeMonitor,
    TrainClock,
    UpdateRatioMonitor,
)
from initlab.monitors.curves import TestErrorCurve
from initlab.monitors.evaluation import (
    GradientNoiseMonitor,
    TrainSubsetAccuracy,
    UnitAblation,
    WeightSummary,
)
from initlab.monitors.stats import probe

__all__ = ["GradNormMonitor", "GradientNoiseMonitor", "ProbeMonitor", "TestErrorCurve", "TrainClock",
           "TrainSubsetAccuracy", "UnitAblation", "UpdateRatioMonitor", "WeightSummary",
           "probe"]
