"""Payload objects: inputs and outputs too large to live inside a task object
(``payloads/<task_id>/input.json``, ``output.json``)."""

from __future__ import annotations

import json
from typing import Any

from ._codec import Encoded
from ._writes import put_resolved
from .errors import CorruptObject
from .keys import KeyLayout
from .storage.base import ObjectStore


class PayloadStore:
    """Writes and reads payload objects of one bucket."""

    def __init__(self, store: ObjectStore, layout: KeyLayout) -> None:
        self.store = store
        self.layout = layout

    async def write_payload(self, task_id: str, name: str, value: Any) -> str:
        """Store a large input/output as ``payloads/<task_id>/<name>.json`` (1 PUT,
        identical on retry) and return its key (the ``input_ref``/``output_ref``)."""
        key = self.layout.payload(task_id, name)
        body = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        await put_resolved(self.store, key, Encoded(body, ""))
        return key

    async def read_payload(self, ref: str) -> Any:
        """The JSON value of a payload object (1 GET).

        Raises:
            ObjectNotFound: the payload object is gone. CorruptObject: not JSON.
        """
        obj = await self.store.get(ref)
        try:
            return json.loads(obj.data)
        except ValueError as exc:
            raise CorruptObject(ref, "json", f"not valid JSON ({exc})") from None

