from initlab.monitors.callbacks import GradNormMonitor, ProbeMonitor, UpdateRatioMonitor
from initlab.monitors.stats import probe

__all__ = ["GradNormMonitor", "ProbeMonitor", "UpdateRatioMonitor", "probe"]
