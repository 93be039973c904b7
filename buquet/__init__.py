"""buquet — a task queue and cron scheduler whose only backend is an S3 bucket.

The public surface::

    from buquet import connect, Worker, WorkerRunOptions, RetryPolicy
    from buquet import Task, TaskStatus, RetryableError, PermanentError
"""

from .errors import (
    BuquetError,
    ConfigurationError,
    CorruptObject,
    LeaseLost,
    ObjectNotFound,
    PermanentError,
    PreconditionFailed,
    RetryableError,
    ScheduleExists,
    ScheduleNotFound,
    StorageError,
    TaskError,
    TaskNotFound,
    TaskTimeout,
    ValidationError,
)
from .models import RetryPolicy, Task, TaskStatus
from .monitor import Monitor
from .queue import Queue, connect
from .scheduler import Scheduler, tick_once
from .schedules import CatchUp, Schedule, ScheduleLastRun
from .storage import LocalStore, MemoryStore, ObjectStore
from .worker import Worker, WorkerRunOptions

__version__ = "0.1.0"

__all__ = [
    "BuquetError",
    "CatchUp",
    "ConfigurationError",
    "CorruptObject",
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
    "Schedule",
    "ScheduleExists",
    "ScheduleLastRun",
    "ScheduleNotFound",
    "Scheduler",
    "StorageError",
    "Task",
    "TaskError",
    "TaskNotFound",
    "TaskStatus",
    "TaskTimeout",
    "ValidationError",
    "Worker",
    "WorkerRunOptions",
    "connect",
    "tick_once",
]
