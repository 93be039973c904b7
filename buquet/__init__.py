"""buquet — a task queue and cron scheduler whose only backend is an S3 bucket.

The public surface::

    from buquet import connect, Worker, WorkerRunOptions, RetryPolicy
    from buquet import Task, TaskStatus, RetryableError, PermanentError
"""

from .errors import (
    BuquetError,
    ConfigurationError,
    LeaseLost,
    ObjectNotFound,
    PermanentError,
    PreconditionFailed,
    RetryableError,
    StorageError,
    TaskError,
    TaskNotFound,
    ValidationError,
)
from .models import RetryPolicy, Task, TaskStatus
from .monitor import Monitor
from .queue import Queue, connect
from .storage import LocalStore, MemoryStore, ObjectStore
from .worker import Worker, WorkerRunOptions

__version__ = "0.1.0"

__all__ = [
    "BuquetError",
    "ConfigurationError",
    "LeaseLost",
    "LocalStore",
    "MemoryStore",
    "Monitor",
    "ObjectNotFound",
    "ObjectStore",
    "PermanentError",
    "PreconditionFailed",
    "Queue",
    "RetryPolicy",
    "RetryableError",
    "StorageError",
    "Task",
    "TaskError",
    "TaskNotFound",
    "TaskStatus",
    "ValidationError",
    "Worker",
    "WorkerRunOptions",
    "connect",
]
