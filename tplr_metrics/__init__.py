"""tplr_metrics: telemetry for training runs that never loses a point and never slows the loop.

Importing this package starts no thread, reads no environment variable and configures no
logging; a :class:`MetricsLogger` does its work when it is built.
"""

from ._version import __version__
from .config.settings import ConfigurationError, ServerSettings
from .encoding.line_protocol import encode_line
from .encoding.points import Point
from .encoding.values import process_value
from .log_store import open_log_store
from .logger import MetricsLogger, process_runtime_id
from .sinks.base import Rejection, Sink, WriteResult

__all__ = [
    "ConfigurationError",
    "MetricsLogger",
    "Point",
    "Rejection",
    "ServerSettings",
    "Sink",
    "WriteResult",
    "__version__",
    "encode_line",
    "open_log_store",
    "process_runtime_id",
    "process_value",
]
