"""The public surface is what the README documents: no more, no less."""

from __future__ import annotations

import re
from pathlib import Path

import buquet

README = Path(__file__).resolve().parent.parent / "README.md"


def documented_names() -> set[str]:
    text = README.read_text()
    block = text.split("<!-- public-api", 1)[1].split("<!-- /public-api -->", 1)[0]
    names: set[str] = set()
    for line in block.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", first_cell))
    return names


def test_all_equals_the_names_the_readme_documents() -> None:
    assert set(buquet.__all__) == documented_names()
    assert len(buquet.__all__) == len(set(buquet.__all__))


def test_every_exported_name_exists_and_has_a_docstring() -> None:
    for name in buquet.__all__:
        obj = getattr(buquet, name)
        assert (obj.__doc__ or "").strip(), name


def test_every_error_derives_from_buquet_error_with_builtin_bases_kept() -> None:
    assert issubclass(buquet.ValidationError, ValueError)
    assert issubclass(buquet.TaskNotFound, KeyError)
    assert issubclass(buquet.TaskTimeout, TimeoutError) and issubclass(buquet.TaskTimeout, buquet.BuquetError)
    assert issubclass(buquet.CorruptObject, buquet.StorageError)
    for name in buquet.__all__:
        obj = getattr(buquet, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, buquet.TaskError):
            assert issubclass(obj, buquet.BuquetError), name
