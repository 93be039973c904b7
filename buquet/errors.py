"""buquet's one exception tree.

Every error raised by buquet derives from :class:`BuquetError`. Storage backends map
their own exceptions (obstore, boto3, OS errors) onto :class:`StorageError` and its
subclasses, so no backend-specific exception ever leaks to callers.

Handler outcome signals (:class:`RetryableError`, :class:`PermanentError`) are raised
by *your* task handlers to tell the worker what to do with a failed attempt.
"""

from __future__ import annotations


class BuquetError(Exception):
    """Base class of every exception buquet raises."""


class ConfigurationError(BuquetError):
    """The queue cannot be configured: missing bucket/endpoint, bad bucket config, ..."""


class ValidationError(BuquetError, ValueError):
    """Bad input, rejected before anything was written.

    Attributes:
        field: name of the offending argument or field (e.g. ``"task_type"``).
        rule: the rule it broke, in words.
    """

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class StorageError(BuquetError):
    """A storage request failed (network, permissions, server error, ...).

    Attributes:
        key: the object key the request was about, when there is one.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


class ObjectNotFound(StorageError):
    """The object does not exist (S3 404 NoSuchKey)."""


class PreconditionFailed(StorageError):
    """A conditional write lost: If-None-Match:* on an existing key, or If-Match on a
    changed or missing object (S3 412, or 404 for If-Match on AWS)."""


class TaskNotFound(BuquetError, KeyError):
    """No task with that id exists in the queue."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else "task not found"


class ScheduleNotFound(BuquetError, KeyError):
    """No schedule with that id exists."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "schedule not found"


class ScheduleExists(BuquetError):
    """A schedule with that id already exists."""


class LeaseLost(BuquetError):
    """The worker's lease on a task attempt was lost: another worker claimed the task
    again after the lease expired, so this attempt's writes are fenced off."""


class TaskError(Exception):
    """Base of the outcome signals a task handler raises. Not a :class:`BuquetError`:
    these come from user code, not from buquet."""


class RetryableError(TaskError):
    """Raise from a handler to fail this attempt and retry the task with its
    :class:`~buquet.RetryPolicy` backoff, until ``max_retries`` retries are used up."""


class PermanentError(TaskError):
    """Raise from a handler to fail the task at once, without further retries."""
