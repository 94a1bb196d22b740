from initlab.monitors.callbacks import (
    GradientNoiseMonitor,
    GradNormMonitor,
    ProbeMonitor,
    TrainClock,
    UpdateRatioMonitor,
    WeightSummary,
)
from initlab.monitors.curves import TestErrorCurve
from initlab.monitors.evaluation import TrainSubsetAccuracy, UnitAblation
from initlab.monitors.stats import probe

__all__ = ["GradNormMonitor", "GradientNoiseMonitor", "ProbeMonitor", "TestErrorCurve", "TrainClock",
           "TrainSubsetAccuracy", "UnitAblation", "UpdateRatioMonitor", "WeightSummary",
           "probe"]
