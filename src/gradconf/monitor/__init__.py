"""Gradient confusion of the training batch, measured inside any training loop.

``Monitor`` measures on scheduled steps from the step's own forward and backward.
``plot_record`` draws a saved record. The Lightning callback is in
``gradconf.monitor.lightning`` and needs the ``lightning`` extra.
"""

from gradconf.monitor.monitor import Monitor, StepContext
from gradconf.monitor.plot import plot_record
from gradconf.monitor.record import Record, read_record

__all__ = ["Monitor", "Record", "StepContext", "plot_record", "read_record"]
