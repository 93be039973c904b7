"""Task schemas: a JSON Schema (draft 2020-12) per task type for its input and output.

A task type's schema is a dict with up to two keys, ``"input"`` and ``"output"``, each a
JSON Schema (see :class:`buquet.typing.TaskSchema`)::

    await queue.publish_schema("send_email", {
        "input": {"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]},
        "output": {"type": "object", "properties": {"sent": {"type": "boolean"}}},
    })
    schema = await queue.get_schema("send_email")
    validate_input(schema, {"to": 42})  # SchemaValidationError: "Schema validation failed: $.to: 42 is not of type 'string'"

Storage: one object per task type, ``schemas/<task_type>.json`` under the queue's key
prefix (:meth:`~buquet.keys.KeyLayout.schema`), a :mod:`buquet._codec` document
``{"version": 1, "task_type": ..., "schema": {"input": ..., "output": ...}, "rev": ...}``.
Publishing overwrites it (the last publish wins); nothing else writes it.

Validation uses the ``jsonschema`` library's ``Draft202012Validator``. ``format`` is an
annotation, as the draft says (not checked). ``$ref`` resolves inside the schema
(``#/$defs/...``, anchors) and to the JSON Schema meta-schemas; nothing is ever fetched
over the network, and :meth:`SchemaStore.publish_schema` rejects a reference it cannot
resolve.

A worker validates a task's input before running its handler through a
:class:`SchemaCache` (one GET per task type per ``ttl_seconds``): input that does not
match fails the task at once with the :class:`~buquet.errors.SchemaValidationError`
text, and the handler never runs. Outputs are validated only when you call
:func:`validate_output`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from . import _validate as v
from ._codec import Encoded, decode_with, encode, new_rev
from ._logutil import ThrottledLog, describe, error_key
from ._writes import put_resolved
from .errors import CorruptObject, ObjectNotFound, SchemaValidationError, StorageError, ValidationError
from .keys import KeyLayout
from .storage.base import ObjectStore

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

    from .typing import TaskSchema

__all__ = ["SchemaStore", "SchemaCache", "validate_input", "validate_output", "normalize_schema", "SCHEMA_HALVES",
           "DEFAULT_CACHE_TTL_SECONDS", "MAX_REPORTED_ERRORS"]

log = logging.getLogger("buquet.schemas")

#: the keys of a task schema that are kept; any other key is dropped by publish
SCHEMA_HALVES = ("input", "output")
#: how long a worker trusts a schema it read (seconds)
DEFAULT_CACHE_TTL_SECONDS = 30.0
#: at most this many errors are listed in one SchemaValidationError ("... and N more")
MAX_REPORTED_ERRORS = 50
#: one error message is cut at this many characters (messages quote the instance)
MAX_ERROR_MESSAGE_CHARS = 300
#: stored document format
DOC_VERSION = 1
#: keys per LIST page
_PAGE = 1000


# --------------------------------------------------------------------------- compile
def _jsonschema() -> Any:
    """Import ``jsonschema`` on first use (it takes ~0.5 s; most processes never
    validate anything)."""
    import jsonschema

    return jsonschema


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_MESSAGE_CHARS else text[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"


def _path(root: str, parts: Any) -> str:
    """``$.input.properties.to`` style path of ``parts`` under ``root``."""
    out = root
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _unresolvable_refs(schema: Any) -> list[str]:
    """The ``$ref`` values of ``schema`` (walking its subschemas as draft 2020-12 defines
    them) that cannot be resolved without a network fetch. A schema with an ``$id``
    below its root is not checked (its relative references have other bases)."""
    if not isinstance(schema, dict):
        return []
    from jsonschema_specifications import REGISTRY as META_SCHEMAS
    from referencing import Registry
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    refs: list[str] = []

    def walk(node: Any, top: bool) -> bool:  # False: nested $id, give up
        if not isinstance(node, dict):
            return True
        if not top and "$id" in node:
            return False
        ref = node.get("$ref")
        if isinstance(ref, str):
            refs.append(ref)
        return all(walk(sub, False) for sub in DRAFT202012.subresources_of(node))

    if not walk(schema, True) or not refs:
        return []
    base = schema.get("$id") if isinstance(schema.get("$id"), str) else ""
    registry = Registry().with_resource(base, DRAFT202012.create_resource(schema)).crawl()
    resolver = registry.combine(META_SCHEMAS).resolver(base_uri=base)
    bad: list[str] = []
    for ref in refs:
        try:
            resolver.lookup(ref)
        except Unresolvable:
            bad.append(ref)
    return bad


def _compile(half: str, schema: Any) -> "Draft202012Validator":
    """A validator for one half (``"input"``/``"output"``) of a task schema.

    Raises:
        SchemaValidationError: the half is not a valid draft 2020-12 schema
            (``["Invalid schema: $.input.type: ..."]``), or names a ``$ref`` that
            cannot be resolved.
    """
    js = _jsonschema()
    from referencing import Registry

    try:
        js.Draft202012Validator.check_schema(schema)
    except js.SchemaError as exc:
        raise SchemaValidationError(half, [f"Invalid schema: {_path('$.' + half, exc.path)}: {_cut(exc.message)}"]) from None
    bad = _unresolvable_refs(schema)
    if bad:
        shown = ", ".join(repr(r) for r in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise SchemaValidationError(
            half, [f"Invalid schema: $.{half}: unresolvable $ref {shown} (only references inside the "
                   "schema and to the JSON Schema meta-schemas are followed; nothing is fetched)"])
    # An empty registry: never fetch remote references (jsonschema's default would).
    return js.Draft202012Validator(schema, registry=Registry())


def _check(half: str, validator: "Draft202012Validator", data: Any) -> None:
    """Validate ``data``; raise SchemaValidationError with every error, sorted by path."""
    from referencing.exceptions import Unresolvable

    try:
        found = [(e.json_path, _cut(e.message)) for e in validator.iter_errors(data)]
    except Unresolvable as exc:  # a $ref the publish-time check could not see
        raise SchemaValidationError(half, [f"Invalid schema: $.{half}: {_cut(describe(exc))}"]) from None
    if not found:
        return
    found.sort()
    errors = [f"{path}: {message}" for path, message in found[:MAX_REPORTED_ERRORS]]
    if len(found) > MAX_REPORTED_ERRORS:
        errors.append(f"... and {len(found) - MAX_REPORTED_ERRORS} more errors")
    raise SchemaValidationError(half, errors)


def _validate(half: str, schema: Any, data: Any) -> None:
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise ValidationError("schema", f"must be a dict with 'input' and/or 'output', got {type(schema).__name__}")
    if half not in schema:
        return
    _check(half, _compile(half, schema[half]), data)


def validate_input(schema: "TaskSchema | dict[str, Any] | None", data: Any) -> None:
    """Check ``data`` against ``schema["input"]`` (JSON Schema draft 2020-12). *(sync)*

    Args:
        schema: a task schema as :meth:`SchemaStore.get_schema` returns it; ``None``, or
            a schema without ``"input"``, passes anything.
        data: the task input (any JSON value).

    Raises:
        SchemaValidationError: ``data`` does not match: ``"Schema validation failed:
            $.to: 42 is not of type 'string'; $: 'subject' is a required property"``
            (every error with its JSON path, sorted by path; at most 50 listed). Also
            when ``schema["input"]`` is itself not a valid schema (``"Schema validation
            failed: Invalid schema: ..."``). A ``ValidationError`` and ``ValueError``.
        ValidationError: ``schema`` is not a dict.

    S3: none.
    """
    _validate("input", schema, data)


def validate_output(schema: "TaskSchema | dict[str, Any] | None", data: Any) -> None:
    """Check ``data`` against ``schema["output"]`` (JSON Schema draft 2020-12). *(sync)*

    Workers never call this on their own: call it in a handler before returning, or
    on ``task.output`` after :meth:`~buquet.Queue.wait`.

    Args:
        schema: a task schema; ``None``, or one without ``"output"``, passes anything.
        data: the task output (any JSON value).

    Raises:
        SchemaValidationError: as :func:`validate_input`, for the output.
        ValidationError: ``schema`` is not a dict.

    S3: none.
    """
    _validate("output", schema, data)


def normalize_schema(schema: Any) -> dict[str, Any]:
    """The kept halves of a schema to publish, as plain JSON; validated.

    Raises:
        ValidationError: not a dict, or not JSON.
        SchemaValidationError: a half is not a valid draft 2020-12 schema.
    """
    if not isinstance(schema, dict):
        raise ValidationError("schema", f"must be a dict with 'input' and/or 'output', got {type(schema).__name__}")
    plain = json.loads(v.json_value(schema, "schema"))  # tuples → lists, checks NaN, keys
    kept = {half: plain[half] for half in SCHEMA_HALVES if half in plain}
    for half, part in kept.items():
        _compile(half, part)
    return kept


# --------------------------------------------------------------------------- storage
def _from_document(task_type: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def build(doc: dict[str, Any]) -> dict[str, Any]:
        if doc.get("task_type") != task_type:
            raise ValidationError("task_type", f"{doc.get('task_type')!r} does not match the key's {task_type!r}")
        body = doc.get("schema")
        if not isinstance(body, dict):
            raise ValidationError("schema", f"must be an object, got {type(body).__name__}")
        return {half: body[half] for half in SCHEMA_HALVES if half in body}

    return build


class SchemaStore:
    """The task schemas of one queue: ``schemas/<task_type>.json`` objects.

    ``Queue`` exposes it as ``queue.schemas`` and delegates ``publish_schema``,
    ``get_schema``, ``list_schemas`` and ``delete_schema`` to it.

    Args:
        store: the object store (the queue's bucket).
        layout: the queue's key layout (its prefix).
    """

    def __init__(self, store: ObjectStore, layout: KeyLayout) -> None:
        self.store = store
        self.layout = layout

    async def publish_schema(self, task_type: str, schema: "TaskSchema | dict[str, Any]") -> None:
        """Store the JSON Schemas of a task type, replacing any earlier ones.

        Only the ``"input"`` and ``"output"`` keys are kept (either may be missing);
        every other key is dropped. Each kept half must be a valid JSON Schema, draft
        2020-12, whose ``$ref``\\ s resolve without a network fetch.

        Args:
            task_type: the task type (letters, digits, ``_ . : -``).
            schema: ``{"input": <JSON Schema>, "output": <JSON Schema>}``.

        Raises:
            ValidationError: bad ``task_type``; ``schema`` not a dict or not JSON (NaN,
                non-string keys, sets, ...). Nothing is written.
            SchemaValidationError: a half is not a valid schema: ``"Schema validation
                failed: Invalid schema: $.input.type: ..."``. Nothing is written.
            StorageError: the store failed.

        S3: one PUT (+ one GET to resolve a write whose response was lost). Workers
        see the new schema within their cache TTL (30 s by default).
        """
        v.task_type(task_type)
        kept = normalize_schema(schema)
        rev = new_rev()
        doc = {"version": DOC_VERSION, "task_type": task_type, "schema": kept}
        await put_resolved(self.store, self.layout.schema(task_type), Encoded(encode(doc, rev), rev))

    async def get_schema(self, task_type: str) -> dict[str, Any] | None:
        """The task type's published schema (``{"input": ..., "output": ...}``, with
        the halves that were published), or ``None`` when there is none.

        Raises:
            ValidationError: bad ``task_type``.
            CorruptObject: the stored object cannot be decoded (names the key).
            StorageError: the store failed.

        S3: one GET.
        """
        v.task_type(task_type)
        key = self.layout.schema(task_type)
        try:
            obj = await self.store.get(key)
        except ObjectNotFound:
            return None
        schema, _ = decode_with(obj.data, key, _from_document(task_type))
        return schema

    async def list_schemas(self) -> list[str]:
        """The task types that have a published schema, sorted.

        Raises:
            StorageError: the store failed.

        S3: one LIST per 1,000 schemas; no GET.
        """
        prefix = self.layout.schemas_prefix()
        found: list[str] = []
        start_after: str | None = None
        while True:
            page = await self.store.list(prefix, start_after=start_after, limit=_PAGE)
            for info in page:
                task_type = self.layout.parse_schema(info.key)
                if task_type is not None and v.TASK_TYPE_RE.match(task_type):
                    found.append(task_type)
            if len(page) < _PAGE:
                return sorted(found)
            start_after = page[-1].key

    async def delete_schema(self, task_type: str) -> None:
        """Remove the task type's schema; a task type without one is fine. Workers stop
        validating it within their cache TTL.

        Raises:
            ValidationError: bad ``task_type``.
            StorageError: the store failed.

        S3: one DELETE.
        """
        v.task_type(task_type)
        await self.store.delete(self.layout.schema(task_type))


# --------------------------------------------------------------------------- worker cache
@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float  # monotonic seconds
    schema: dict[str, Any] | None
    validator: "Draft202012Validator | None" = None
    invalid: SchemaValidationError | None = None


class SchemaCache:
    """A worker's view of the task schemas: each task type's schema read at most once
    per ``ttl_seconds`` (a missing schema is remembered too), its input validator
    compiled once.

    Args:
        schemas: the queue's :class:`SchemaStore`.
        ttl_seconds: how long a schema read is trusted (``>= 0``; 0 reads every time).
        clock: monotonic seconds (tests).

    Raises:
        ValidationError: ``ttl_seconds`` negative or not a number.
    """

    def __init__(
        self,
        schemas: SchemaStore,
        ttl_seconds: float = DEFAULT_CACHE_TTL_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, (int, float)) \
                or not math.isfinite(ttl_seconds) or ttl_seconds < 0:
            raise ValidationError("ttl_seconds", f"must be a number >= 0, got {ttl_seconds!r}")
        self.schemas = schemas
        self.ttl_seconds = float(ttl_seconds)
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Task[_Entry]] = {}
        self._throttled = ThrottledLog(log)

    async def check_input(self, task_type: str, input: Any) -> None:
        """Validate a task's input against its type's published input schema: what a
        worker does before running the handler.

        A task type without a schema, or whose schema has no ``"input"``, passes. When
        the schema cannot be read (the store fails, the object is corrupt) the task is
        not blocked: one log line (rate-limited) and it passes.

        Raises:
            SchemaValidationError: the input does not match (``"Schema validation
                failed: $.to: ..."``), or the stored input schema is itself invalid.

        S3: one GET per task type per ``ttl_seconds`` (concurrent calls for one task
        type share it); none while cached.
        """
        try:
            entry = await self._entry(task_type)
        except StorageError as exc:
            self._throttled.warning(
                ("read", task_type, error_key(exc)),
                "schema of task type %s could not be read; running the task without input validation: %s",
                task_type, describe(exc))
            log.debug("schema read failed", exc_info=exc)
            return
        if entry.invalid is not None:
            raise SchemaValidationError("input", entry.invalid.errors)
        if entry.validator is not None:
            _check("input", entry.validator, input)

    def invalidate(self, task_type: str | None = None) -> None:
        """Forget one task type's cached schema (or all): the next check reads it again.
        Sends no request."""
        if task_type is None:
            self._entries.clear()
        else:
            self._entries.pop(task_type, None)

    async def _entry(self, task_type: str) -> _Entry:
        entry = self._entries.get(task_type)
        if entry is not None and self._clock() < entry.expires:
            return entry
        loop = asyncio.get_running_loop()
        loading = self._loading.get(task_type)
        if loading is None or loading.get_loop() is not loop:
            loading = loop.create_task(self._load(task_type))
            self._loading[task_type] = loading
            loading.add_done_callback(lambda t, tt=task_type: self._loaded(tt, t))
        # shield: a caller cancelled while waiting does not cancel the others' read
        return await asyncio.shield(loading)

    def _loaded(self, task_type: str, task: "asyncio.Task[_Entry]") -> None:
        if self._loading.get(task_type) is task:
            del self._loading[task_type]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning if all waiters left

    async def _load(self, task_type: str) -> _Entry:
        expires = self._clock() + self.ttl_seconds
        try:
            schema = await self.schemas.get_schema(task_type)
        except CorruptObject as exc:
            log.error("schema of task type %s is unreadable, ignored for %gs: %s", task_type, self.ttl_seconds,
                      describe(exc))
            schema = None
        except ValidationError:
            schema = None  # not a task type that can have a schema
        entry = _Entry(expires, schema)
        if schema is not None and "input" in schema:
            try:
                entry = _Entry(expires, schema, validator=_compile("input", schema["input"]))
            except SchemaValidationError as exc:
                entry = _Entry(expires, schema, invalid=exc)
        self._entries[task_type] = entry
        return entry
