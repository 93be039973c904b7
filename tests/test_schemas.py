"""Task schemas (spec §11): SchemaStore on every backend, validate_input/validate_output,
and the worker's SchemaCache (request counts, TTL, storage errors never block a task)."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from typing import Any

import pytest

from buquet import MemoryStore, Queue
from buquet.errors import CorruptObject, SchemaValidationError, StorageError, ValidationError
from buquet.keys import KeyLayout
from buquet.schemas import (
    MAX_REPORTED_ERRORS,
    SchemaCache,
    SchemaStore,
    validate_input,
    validate_output,
)
from buquet.storage.base import ObjectStore, StoredObject
from buquet.typing import JsonSchemaObject, TaskSchema

EMAIL: TaskSchema = {
    "input": {
        "type": "object",
        "properties": {"to": {"type": "string"}, "count": {"type": "integer"}},
        "required": ["to"],
    },
    "output": {"type": "object", "properties": {"sent": {"type": "boolean"}}, "required": ["sent"]},
}


@pytest.fixture
def schemas(any_store: ObjectStore) -> SchemaStore:
    return SchemaStore(any_store, KeyLayout("app"))


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ SchemaStore, every backend
async def test_round_trip_and_layout(schemas: SchemaStore) -> None:
    assert await schemas.get_schema("send_email") is None
    await schemas.publish_schema("send_email", EMAIL)
    assert await schemas.get_schema("send_email") == EMAIL
    keys = [i.key for i in await schemas.store.list("app/")]
    assert keys == ["app/schemas/send_email.json"]
    doc = json.loads((await schemas.store.get(keys[0])).data)
    assert doc["version"] == 1 and doc["task_type"] == "send_email" and doc["schema"] == EMAIL
    assert isinstance(doc["rev"], str)


async def test_publish_overwrites_and_drops_other_keys(schemas: SchemaStore) -> None:
    await schemas.publish_schema("t", EMAIL)
    await schemas.publish_schema("t", {"output": {"type": "integer"}, "description": "x", "inputs": {}})
    assert await schemas.get_schema("t") == {"output": {"type": "integer"}}
    await schemas.publish_schema("t", {"whatever": 1})
    assert await schemas.get_schema("t") == {}


async def test_list_schemas_sorted_and_delete(schemas: SchemaStore) -> None:
    assert await schemas.list_schemas() == []
    for t in ["b.task", "a:task", "c-task", "A_task"]:
        await schemas.publish_schema(t, {"input": True})
    await schemas.store.put("app/schemas/not a task type.json", b"{}")  # ignored
    await schemas.store.put("app/schemas/nested/x.json", b"{}")  # ignored
    assert await schemas.list_schemas() == ["A_task", "a:task", "b.task", "c-task"]
    await schemas.delete_schema("b.task")
    await schemas.delete_schema("b.task")  # absent is fine
    await schemas.delete_schema("never-published")
    assert await schemas.list_schemas() == ["A_task", "a:task", "c-task"]
    assert await schemas.get_schema("b.task") is None


async def test_list_schemas_pages_past_1000(schemas: SchemaStore) -> None:
    names = [f"type{i:05d}" for i in range(1003)]
    sem = asyncio.Semaphore(32)

    async def put(name: str) -> None:
        async with sem:
            await schemas.store.put(schemas.layout.schema(name), b"{}")

    await asyncio.gather(*(put(n) for n in names))
    assert await schemas.list_schemas() == names


async def test_invalid_schema_rejected_before_anything_is_written(schemas: SchemaStore) -> None:
    with pytest.raises(SchemaValidationError, match=r"^Schema validation failed: Invalid schema: \$\.input\.type: ") as e:
        await schemas.publish_schema("t", {"input": {"type": "strin"}, "output": {"type": "object"}})
    assert e.value.field == "input" and len(e.value.errors) == 1
    assert isinstance(e.value, ValueError)
    with pytest.raises(SchemaValidationError, match=r"Invalid schema: \$\.output\.properties\.a\.minimum"):
        await schemas.publish_schema("t", {"output": {"properties": {"a": {"minimum": "zero"}}}})
    with pytest.raises(SchemaValidationError, match=r"Invalid schema: \$\.input: None is not of type"):
        await schemas.publish_schema("t", {"input": None})
    assert await schemas.store.list("app/") == []


async def test_unresolvable_refs_rejected_at_publish(schemas: SchemaStore) -> None:
    for ref in ["#/$defs/missing", "#noanchor", "other.json", "https://example.invalid/s.json"]:
        with pytest.raises(SchemaValidationError, match="Invalid schema: .*unresolvable \\$ref"):
            await schemas.publish_schema("t", {"input": {"properties": {"a": {"$ref": ref}}}})
    assert await schemas.store.list("app/") == []
    ok: dict[str, Any] = {
        "$defs": {"addr": {"$anchor": "addr", "type": "string"}},
        "properties": {"a": {"$ref": "#/$defs/addr"}, "b": {"$ref": "#addr"},
                       "c": {"$ref": "https://json-schema.org/draft/2020-12/schema"}},
    }
    await schemas.publish_schema("t", {"input": ok})
    assert await schemas.get_schema("t") == {"input": ok}


async def test_non_json_or_non_dict_rejected_at_call_time(schemas: SchemaStore) -> None:
    for bad in [["input"], "schema", None, {"input": {"type": "object", "default": {1, 2}}},
                {"input": {"minimum": float("nan")}}, {"input": {1: "x"}}, {"other": object()}]:
        with pytest.raises(ValidationError):
            await schemas.publish_schema("t", bad)  # type: ignore[arg-type]
    for bad_type in ["", "has space", "a/b", 7]:
        with pytest.raises(ValidationError, match="task_type"):
            await schemas.publish_schema(bad_type, EMAIL)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="task_type"):
            await schemas.get_schema(bad_type)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="task_type"):
            await schemas.delete_schema(bad_type)  # type: ignore[arg-type]
    assert await schemas.store.list("app/") == []


async def test_tuples_are_stored_as_lists(schemas: SchemaStore) -> None:
    await schemas.publish_schema("t", {"input": {"type": ("string", "integer"), "required": ()}})
    assert await schemas.get_schema("t") == {"input": {"type": ["string", "integer"], "required": []}}


async def test_corrupt_object_raises_corrupt_object(schemas: SchemaStore) -> None:
    await schemas.store.put(schemas.layout.schema("t"), b"not json")
    with pytest.raises(CorruptObject, match="schemas/t.json"):
        await schemas.get_schema("t")
    await schemas.store.put(schemas.layout.schema("t"), json.dumps({"task_type": "u", "schema": {}}).encode())
    with pytest.raises(CorruptObject, match="task_type"):
        await schemas.get_schema("t")


async def test_store_of_a_queue_uses_its_prefix(store: MemoryStore) -> None:
    from buquet import connect

    queue: Queue = await connect(store=store, prefix="myapp")
    s = SchemaStore(queue.store, queue.layout)
    await s.publish_schema("t", {"input": {"type": "string"}})
    assert "myapp/schemas/t.json" in store.keys()
    assert await SchemaStore(store, KeyLayout("other")).list_schemas() == []


async def test_request_costs(queue: Queue) -> None:
    s = SchemaStore(queue.store, queue.layout)
    store = queue.store
    store.request_counts.clear()
    await s.publish_schema("t", EMAIL)
    assert store.request_counts == {"put": 1}
    store.request_counts.clear()
    await s.get_schema("t")
    await s.get_schema("missing")
    assert store.request_counts == {"get": 2}
    store.request_counts.clear()
    await s.list_schemas()
    assert store.request_counts == {"list": 1}
    store.request_counts.clear()
    await s.delete_schema("t")
    assert store.request_counts == {"delete": 1}


# ------------------------------------------------------------------ validate_input / validate_output
def test_validation_messages() -> None:
    validate_input(EMAIL, {"to": "a@b.c", "count": 2})
    with pytest.raises(SchemaValidationError) as e:
        validate_input(EMAIL, {"to": 5, "count": "x"})
    assert str(e.value) == ("Schema validation failed: $.count: 'x' is not of type 'integer'; "
                            "$.to: 5 is not of type 'string'")
    assert e.value.field == "input" and len(e.value.errors) == 2
    assert isinstance(e.value, ValidationError) and isinstance(e.value, ValueError)
    with pytest.raises(SchemaValidationError, match=r"^Schema validation failed: \$: 'to' is a required property$"):
        validate_input(EMAIL, {})
    with pytest.raises(SchemaValidationError, match=r"\$: 'sent' is a required property") as e:
        validate_output(EMAIL, {})
    assert e.value.field == "output"
    validate_output(EMAIL, {"sent": True})


def test_array_paths_and_error_cap() -> None:
    schema = {"input": {"type": "array", "items": {"type": "integer"}}}
    with pytest.raises(SchemaValidationError, match=r"\$\[1\]: 'b' is not of type 'integer'"):
        validate_input(schema, [1, "b"])
    with pytest.raises(SchemaValidationError) as e:
        validate_input(schema, ["x"] * (MAX_REPORTED_ERRORS + 7))
    assert len(e.value.errors) == MAX_REPORTED_ERRORS + 1
    assert e.value.errors[-1] == "... and 7 more errors"


def test_missing_half_passes() -> None:
    validate_input({"output": {"type": "integer"}}, "anything")
    validate_output({"input": {"type": "integer"}}, "anything")
    validate_input({}, 1)
    validate_input(None, 1)
    validate_output(None, 1)
    validate_input({"input": True}, {"x": 1})
    with pytest.raises(SchemaValidationError, match="False schema does not allow"):
        validate_input({"input": False}, 1)
    with pytest.raises(ValidationError, match="schema"):
        validate_input(["input"], 1)  # type: ignore[arg-type]


def test_invalid_schema_in_validate() -> None:
    with pytest.raises(SchemaValidationError, match=r"^Schema validation failed: Invalid schema: \$\.input\.type: ") as e:
        validate_input({"input": {"type": 12}}, 1)
    assert e.value.errors[0].startswith("Invalid schema: ")


def test_remote_refs_are_never_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*a: Any, **k: Any) -> Any:
        raise AssertionError("network fetch attempted")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(SchemaValidationError, match="Invalid schema: .*unresolvable"):
        validate_input({"input": {"$ref": "https://example.invalid/schema.json"}}, 1)
    # nested $id: not checked statically; at validation the missing reference is reported
    nested = {"properties": {"a": {"$id": "https://example.invalid/a", "$ref": "b.json"}}}
    with pytest.raises(SchemaValidationError, match=r"Invalid schema: \$\.input: "):
        validate_input({"input": nested}, {"a": 1})


def test_draft_2020_12_semantics() -> None:
    schema = {"input": {"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "integer"},
                        "dependentRequired": {}}}
    validate_input(schema, ["a", 1, 2])
    with pytest.raises(SchemaValidationError, match=r"\$\[2\]: 'c' is not of type 'integer'"):
        validate_input(schema, ["a", 1, "c"])
    # format is an annotation in 2020-12
    validate_input({"input": {"type": "string", "format": "email"}}, "not an email")


def test_typing_module() -> None:
    obj: JsonSchemaObject = {"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}
    ts: TaskSchema = {"input": obj}
    assert set(JsonSchemaObject.__annotations__) == {"type", "properties", "required"}
    assert set(TaskSchema.__annotations__) == {"input", "output"}
    assert JsonSchemaObject.__total__ is False and TaskSchema.__total__ is False
    validate_input(ts, {"to": "x"})


# ------------------------------------------------------------------ SchemaCache
async def test_cache_reads_once_per_ttl(queue: Queue) -> None:
    s = SchemaStore(queue.store, queue.layout)
    await s.publish_schema("send_email", EMAIL)
    clock = FakeMonotonic()
    cache = SchemaCache(s, ttl_seconds=30, clock=clock)
    store = queue.store
    store.request_counts.clear()
    for _ in range(5):
        await cache.check_input("send_email", {"to": "x"})
        await cache.check_input("no_schema", {"anything": 1})  # a missing schema is cached too
    assert store.request_counts == {"get": 2}
    with pytest.raises(SchemaValidationError, match=r"^Schema validation failed: \$\.to: 1 is not of type 'string'$"):
        await cache.check_input("send_email", {"to": 1})
    assert store.request_counts == {"get": 2}

    await s.publish_schema("send_email", {"input": {"type": "object", "required": ["subject"]}})
    clock.now += 29.9
    await cache.check_input("send_email", {"to": "x"})  # still the old schema
    clock.now += 0.2
    with pytest.raises(SchemaValidationError, match="'subject' is a required property"):
        await cache.check_input("send_email", {"to": "x"})
    assert store.request_counts == {"get": 3, "put": 1}

    cache.invalidate("send_email")
    await s.delete_schema("send_email")
    await cache.check_input("send_email", {})
    assert store.request_counts["get"] == 4


async def test_cache_without_input_half_passes(queue: Queue) -> None:
    s = SchemaStore(queue.store, queue.layout)
    await s.publish_schema("t", {"output": {"type": "integer"}})
    await SchemaCache(s).check_input("t", "anything")


async def test_cache_concurrent_checks_share_one_get(queue: Queue) -> None:
    gate = asyncio.Event()

    class SlowStore(MemoryStore):
        async def get(self, key: str) -> StoredObject:
            await gate.wait()
            return await super().get(key)

    store = SlowStore()
    s = SchemaStore(store, queue.layout)
    await s.publish_schema("t", {"input": {"type": "integer"}})
    cache = SchemaCache(s)
    checks = [asyncio.ensure_future(cache.check_input("t", i)) for i in range(20)]
    bad = asyncio.ensure_future(cache.check_input("t", "x"))
    await asyncio.sleep(0)
    checks[0].cancel()  # one waiter leaving does not cancel the shared read
    gate.set()
    await asyncio.gather(*checks[1:])
    with pytest.raises(SchemaValidationError):
        await bad
    assert store.request_counts["get"] == 1


async def test_cache_storage_error_does_not_block(queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    class DownStore(MemoryStore):
        down = True

        async def get(self, key: str) -> StoredObject:
            if self.down:
                self._count("get")
                raise StorageError(f"S3 GET s3://b/{key} failed: 503: SlowDown", key, operation="GET",
                                   status=503, code="SlowDown")
            return await super().get(key)

    store = DownStore()
    s = SchemaStore(store, queue.layout)
    await s.publish_schema("t", {"input": {"type": "integer"}})
    cache = SchemaCache(s)
    with caplog.at_level(logging.WARNING, logger="buquet.schemas"):
        await cache.check_input("t", "not an integer")  # runs unvalidated
        await cache.check_input("t", "not an integer")
    lines = [r for r in caplog.records if r.name == "buquet.schemas"]
    assert len(lines) == 1
    assert "running the task without input validation" in lines[0].getMessage()
    assert "SlowDown" in lines[0].getMessage()
    assert store.request_counts["get"] == 2  # a failed read is not cached
    store.down = False
    with pytest.raises(SchemaValidationError):
        await cache.check_input("t", "not an integer")


async def test_cache_corrupt_schema_does_not_block(queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    s = SchemaStore(queue.store, queue.layout)
    await queue.store.put(queue.layout.schema("t"), b"garbage")
    cache = SchemaCache(s)
    queue.store.request_counts.clear()
    with caplog.at_level(logging.ERROR, logger="buquet.schemas"):
        await cache.check_input("t", 1)
        await cache.check_input("t", 1)
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 1
    assert queue.store.request_counts["get"] == 1


async def test_cache_invalid_stored_schema_fails_the_input(queue: Queue) -> None:
    # written around publish_schema (which would refuse it)
    doc = {"version": 1, "task_type": "t", "schema": {"input": {"type": "strin"}}, "rev": "r"}
    await queue.store.put(queue.layout.schema("t"), json.dumps(doc).encode())
    cache = SchemaCache(SchemaStore(queue.store, queue.layout))
    queue.store.request_counts.clear()
    for _ in range(2):
        with pytest.raises(SchemaValidationError, match="^Schema validation failed: Invalid schema: "):
            await cache.check_input("t", 1)
    assert queue.store.request_counts["get"] == 1


async def test_cache_ttl_zero_and_bad_ttl(queue: Queue) -> None:
    s = SchemaStore(queue.store, queue.layout)
    cache = SchemaCache(s, ttl_seconds=0)
    queue.store.request_counts.clear()
    await cache.check_input("t", 1)
    await cache.check_input("t", 1)
    assert queue.store.request_counts["get"] == 2
    for bad in [-1, float("inf"), "30", True, None]:
        with pytest.raises(ValidationError, match="ttl_seconds"):
            SchemaCache(s, ttl_seconds=bad)  # type: ignore[arg-type]


@pytest.mark.s3
async def test_cache_on_seaweedfs(s3_queue_factory: Any) -> None:
    queue = await s3_queue_factory(prefix="sw")
    s = SchemaStore(queue.store, queue.layout)
    await s.publish_schema("send_email", EMAIL)
    cache = SchemaCache(s)
    before = queue.store.request_counts.get("get", 0)
    for _ in range(3):
        await cache.check_input("send_email", {"to": "x"})
    with pytest.raises(SchemaValidationError, match="Schema validation failed"):
        await cache.check_input("send_email", {"to": 1})
    assert queue.store.request_counts.get("get", 0) - before == 1
    assert await s.list_schemas() == ["send_email"]
