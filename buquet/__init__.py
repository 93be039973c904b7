"""buquet — a task queue and cron scheduler whose only backend is an S3 bucket.

The public surface::

    from buquet import connect, Worker, WorkerRunOptions, RetryPolicy
    from buquet import Task, TaskStatus, RetryableError, PermanentError
"""

from .errors import (
    BuquetError,
    ConfigurationError,
    CorruptObject,
    IdempotencyConflict,
    LeaseLost,
    ObjectNotFound,
    PermanentError,
    PreconditionFailed,
    RescheduleError,
    RetryableError,
    ScheduleExists,
    ScheduleNotFound,
    SchemaValidationError,
    StorageError,
    TaskError,
    TaskNotFound,
    TaskStateError,
    TaskTimeout,
    ValidationError,
)
from ._control import CancelByTypeResult
from .config import Config, MonitorConfig, WorkerConfig, load_config
from .context import TaskContext
from .typing import JsonSchemaObject, TaskSchema
from .models import RetryPolicy, Task, TaskStatus
from .monitor import Monitor
from .polling import PollingStrategy, ShardLeaseConfig
from .queue import Queue, connect
from .scheduler import Scheduler, tick_once
from .schedules import CatchUp, Schedule, ScheduleLastRun
from .storage import LocalStore, MemoryStore, ObjectStore
from .worker import Worker, WorkerRunOptions
from . import metrics
from ._registry import WorkerInfo
from ._stats import QueueStats

__version__ = "0.1.0"

__all__ = [
    "BuquetError",
    "CancelByTypeResult",
    "CatchUp",
    "Config",
    "ConfigurationError",
    "CorruptObject",
    "IdempotencyConflict",
    "JsonSchemaObject",
    "LeaseLost",
    "LocalStore",
    "MemoryStore",
    "Monitor",
    "MonitorConfig",
    "ObjectNotFound",
    "ObjectStore",
    "PermanentError",
    "PollingStrategy",
    "PreconditionFailed",
    "Queue",
    "QueueStats",
    "RescheduleError",
    "RetryPolicy",
    "RetryableError",
    "Schedule",
    "ScheduleExists",
    "ScheduleLastRun",
    "ScheduleNotFound",
    "Scheduler",
    "SchemaValidationError",
    "ShardLeaseConfig",
    "StorageError",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskNotFound",
    "TaskSchema",
    "TaskStateError",
    "TaskStatus",
    "TaskTimeout",
    "ValidationError",
    "Worker",
    "WorkerConfig",
    "WorkerInfo",
    "WorkerRunOptions",
    "connect",
    "load_config",
    "metrics",
    "tick_once",
]
