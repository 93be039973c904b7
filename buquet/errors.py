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


class StorageError(BuquetError, RuntimeError):
    """A storage request failed (network, permissions, server error, ...). Also a
    ``RuntimeError``, as buquet 0.1.0 raised.

    The message is one line, ``S3 <OP> s3://<bucket>/<key> failed: <status or kind>:
    <short reason> (<hint>)`` for S3 (local directories use the same shape); the
    backend's own exception, with all its detail, is kept as ``__cause__`` for debug
    logging and never appears in ``str()``.

    Attributes:
        key: the object key the request was about, when there is one.
        operation: the request (``"GET"``, ``"PUT"``, ``"LIST"``, ...), when known.
        bucket: the bucket (or local directory) it was sent to, when known.
        status: the HTTP status of the answer; ``None`` when there was no answer
            (connection refused, timeout) or no HTTP at all.
        code: the S3 error code (``"NoSuchBucket"``, ``"SlowDown"``, ...), when known.
        hint: what to check, in words (``"bucket 'x' does not exist"``), when known.
    """

    #: S3 error codes that mean "try again later" whatever their HTTP status.
    TRANSIENT_CODES = frozenset(
        {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable",
         "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests"}
    )

    def __init__(
        self,
        message: str,
        key: str | None = None,
        *,
        operation: str | None = None,
        bucket: str | None = None,
        status: int | None = None,
        code: str | None = None,
        hint: str | None = None,
        transient: bool | None = None,
    ) -> None:
        self.key = key
        self.operation = operation
        self.bucket = bucket
        self.status = status
        self.code = code
        self.hint = hint
        self._transient = transient
        super().__init__(message)

    @property
    def transient(self) -> bool:
        """True when trying again later may succeed: a 5xx answer, 408/429 or an S3
        throttling/timeout code (``SlowDown``, ``RequestTimeout``, ...), or no answer
        at all because the connection was refused, reset or timed out. False for other
        4xx answers (missing bucket, access denied, ...) and for errors of unknown
        cause. The backend may set it explicitly (``transient=`` argument)."""
        if self._transient is not None:
            return self._transient
        if self.code in self.TRANSIENT_CODES:
            return True
        return self.status is not None and (self.status >= 500 or self.status in (408, 429))


class ObjectNotFound(StorageError):
    """The object does not exist (S3 404 NoSuchKey)."""


class PreconditionFailed(StorageError):
    """A conditional write lost: If-None-Match:* on an existing key, or If-Match on a
    changed or missing object (S3 412, or 404 for If-Match on AWS)."""


class TaskNotFound(BuquetError, KeyError, RuntimeError):
    """No task with that id exists in the queue (message: ``"task <id> not found"``).
    Also a ``KeyError``, and a ``RuntimeError`` as buquet 0.1.0 raised."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else "task not found"


class ScheduleNotFound(BuquetError, KeyError):
    """No schedule with that id exists."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "schedule not found"


class ScheduleExists(BuquetError):
    """A schedule with that id already exists."""


class LeaseLost(BuquetError, RuntimeError):
    """The worker's lease on a task attempt was lost: another worker claimed the task
    again after the lease expired, so this attempt's writes are fenced off.
    ``TaskContext.extend_lease`` raises it as ``"Failed to extend lease for task <id>"``
    (a ``RuntimeError``, as in buquet 0.1.0): the handler should stop."""


class TaskStateError(BuquetError, RuntimeError):
    """The task is not in a state that allows the operation, e.g. ``"Cannot cancel task
    with status Running (only Pending tasks can be cancelled)"``. A ``RuntimeError``, as
    buquet 0.1.0 raised.

    Attributes:
        task_id: the task.
        status: its status when the operation was refused.
    """

    def __init__(self, message: str, task_id: str | None = None, status: object = None) -> None:
        self.task_id = task_id
        self.status = status
        super().__init__(message)


class IdempotencyConflict(BuquetError, RuntimeError):
    """``submit`` with an idempotency key that is live for a *different* input:
    ``"Idempotency conflict: key <k> (scope <s>) belongs to task <id> with another
    input"``.

    Attributes:
        key: the idempotency key.
        task_id: the task the key belongs to.
    """

    def __init__(self, message: str, key: str, task_id: str) -> None:
        self.key = key
        self.task_id = task_id
        super().__init__(message)


class TaskError(Exception):
    """Base of the outcome signals a task handler raises. Not a :class:`BuquetError`:
    these come from user code, not from buquet."""


class RetryableError(TaskError):
    """Raise from a handler to fail this attempt and retry the task with its
    :class:`~buquet.RetryPolicy` backoff, until ``max_retries`` retries are used up."""


class PermanentError(TaskError):
    """Raise from a handler to fail the task at once, without further retries."""


class RescheduleError(TaskError):
    """Raise from a handler to run the task again later, not as a failure: it goes back
    to Pending, claimable ``delay_seconds`` from now (negative counts as 0), with
    ``reschedule_count`` one higher; ``retry_count``, ``last_error`` and ``expires_at``
    are unchanged and no attempt is used up. With ``max_reschedules`` reached the task
    fails with ``"Max reschedules (N) exceeded"``.

    Attributes:
        delay_seconds: seconds until the task is claimable again.
    """

    def __init__(self, delay_seconds: int) -> None:
        self.delay_seconds = delay_seconds
        super().__init__(f"Reschedule after {delay_seconds} seconds")


class CorruptObject(StorageError):
    """A stored object could not be decoded: not JSON, or a field of the wrong type.

    Raised by reads of a single object (``Queue.get``); listings and the monitor log
    and skip such objects instead, so one bad object never stops the others.

    Attributes:
        key: the object key.
        field: the offending field (``"available_at"``), or ``"json"`` when the object
            is not JSON at all.
    """

    def __init__(self, key: str, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"object {key!r} is corrupt: {field}: {rule}", key)


class TaskTimeout(BuquetError, TimeoutError):
    """:meth:`Queue.wait` gave up: the task was not final within ``timeout_seconds``.

    Attributes:
        task_id: the task waited for.
    """

    def __init__(self, task_id: str, message: str) -> None:
        self.task_id = task_id
        super().__init__(message)


class SchemaValidationError(ValidationError):
    """A task's input or output does not match its published JSON Schema (draft
    2020-12): ``"Schema validation failed: <error 1>; <error 2>"``, or ``"Schema
    validation failed: Invalid schema: ..."`` for a schema that is itself invalid. A
    :class:`ValidationError` and so a ``ValueError``.

    Attributes:
        field: ``"input"`` or ``"output"``.
        errors: the individual messages.
    """

    def __init__(self, field: str, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__(field, "; ".join(self.errors))

    def __str__(self) -> str:
        return f"Schema validation failed: {self.rule}"
