"""Types for task schemas (:mod:`buquet.schemas`), as buquet 0.1.0 exported them.

``TaskSchema`` is what :meth:`~buquet.Queue.publish_schema` takes and
:meth:`~buquet.Queue.get_schema` returns: an optional ``"input"`` and an optional
``"output"`` JSON Schema (draft 2020-12). ``JsonSchemaObject`` types the common shape
of an object schema; any JSON Schema is accepted at run time (a richer one can be typed
as ``dict[str, Any]``)::

    from buquet.typing import TaskSchema

    schema: TaskSchema = {
        "input": {"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]},
        "output": {"type": "object", "properties": {"sent": {"type": "boolean"}}},
    }
"""

from __future__ import annotations

from typing import Any, TypedDict, Union

__all__ = ["JsonSchemaObject", "TaskSchema"]


class JsonSchemaObject(TypedDict, total=False):
    """An object JSON Schema in its common shape: ``{"type": "object", "properties":
    {"to": {"type": "string"}}, "required": ["to"]}``. Every key is optional."""

    type: str
    properties: dict[str, dict[str, str]]
    required: list[str]


class TaskSchema(TypedDict, total=False):
    """The JSON Schemas of one task type. Either key may be missing (that half is then
    not validated); each is any JSON Schema, draft 2020-12."""

    input: Union[JsonSchemaObject, dict[str, Any], bool]
    output: Union[JsonSchemaObject, dict[str, Any], bool]
