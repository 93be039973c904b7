"""Loading your code by import path: ``"module:attribute"`` → the object, → a Worker.

One loader for every entry point that names user code in a string: ``buquet worker
myapp.tasks:make_worker`` and the Lambda worker's ``BUQUET_WORKER``. Also meant for
your own handlers (an SQS-triggered Lambda, a container entry point)::

    from buquet.imports import build_worker, load_worker_factory

    factory = load_worker_factory(os.environ["MY_WORKER"], name="MY_WORKER")  # at import
    worker = await build_worker(factory, name="MY_WORKER")  # inside the running event loop

An import path is ``package.module:attribute``; the attribute may be dotted
(``myapp.tasks:registry.make_worker``). A *Worker factory* is a plain or async function
taking no arguments and returning a :class:`~buquet.Worker`.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Awaitable, Callable, Union

from .errors import ConfigurationError, ValidationError
from .worker import Worker

#: a plain or async function taking no arguments and returning a Worker
WorkerFactory = Callable[[], Union[Worker, Awaitable[Worker]]]
_EXAMPLE = "e.g. myapp.tasks:make_worker"


def _label(spec: object, name: str | None) -> str:
    return f"{name}={spec!r}" if name else repr(spec)


def parse_spec(spec: object, *, name: str | None = None) -> tuple[str, list[str]]:
    """Split an import path into the module name and the attribute path, importing
    nothing.

    Args:
        spec: ``"module:attribute"`` (dotted module and attribute allowed; surrounding
            whitespace is ignored).
        name: what the caller calls the value (``"BUQUET_WORKER"``, ``"WORKER"``),
            used in messages; the ``field`` of the ValidationError.

    Returns:
        ``(module_name, [attribute, ...])``.

    Raises:
        ValidationError: not a string of that shape (names ``name``, or ``"spec"``).
    """
    field = name or "spec"
    if not isinstance(spec, str):
        raise ValidationError(field, f"must be a module:attribute string ({_EXAMPLE}), got {type(spec).__name__}")
    module_name, colon, attr = spec.strip().partition(":")
    modules, attrs = module_name.split("."), attr.split(".")
    if not colon or not all(p and not any(c.isspace() for c in p) for p in modules) or not all(
        p.isidentifier() for p in attrs
    ):
        raise ValidationError(field, f"must be module:attribute ({_EXAMPLE}), got {spec!r}")
    return module_name, attrs


def load_object(spec: object, *, name: str | None = None) -> Any:
    """Import the module an import path names and return its attribute.

    Args:
        spec: ``"module:attribute"`` (see :func:`parse_spec`).
        name: the setting's name for messages (``"BUQUET_WORKER"``), if any.

    Returns:
        The object (modules are imported once per process, as with ``import``).

    Raises:
        ValidationError: ``spec`` is not of the ``module:attribute`` shape.
        ConfigurationError: the module cannot be imported (the ImportError's message
            included, also when it is about a module *your* module imports), or has no
            such attribute.
        Exception: whatever else importing your module raises (a SyntaxError, an
            error in module-level code), unchanged, with its traceback.
    """
    module_name, attrs = parse_spec(spec, name=name)
    label = _label(spec, name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"{label}: cannot import module {module_name!r}: {exc}") from exc
    obj: Any = module
    for i, part in enumerate(attrs):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = ".".join([module_name, *attrs[:i]])
            raise ConfigurationError(f"{label}: {where!r} has no attribute {part!r}") from None
    return obj


def load_worker_factory(
    spec: object, *, name: str | None = None, allow_worker: bool = False
) -> Worker | WorkerFactory:
    """:func:`load_object`, checked to be a Worker factory (or, with ``allow_worker``,
    a Worker).

    A factory is what an entry point that runs one event loop per call needs (Lambda:
    one per invocation): a Worker holds a Queue whose connections belong to the loop it
    was created in, so a Worker object built at import time is refused unless
    ``allow_worker`` (a long-lived process that runs a single loop, like ``buquet
    worker``).

    Returns:
        The factory (or Worker); pass it to :func:`build_worker` inside the loop.

    Raises:
        ValidationError: ``spec`` is malformed.
        ConfigurationError: cannot import, no such attribute, a Worker object where a
            factory is needed, or neither a Worker nor a callable.
    """
    obj = load_object(spec, name=name)
    label = _label(spec, name)
    if isinstance(obj, Worker):
        if allow_worker:
            return obj
        raise ConfigurationError(
            f"{label} is a Worker object; a factory is needed here (a function, sync or "
            "async, returning a Worker), called inside each invocation's event loop"
        )
    if not callable(obj):
        wanted = "a buquet.Worker or a factory of one" if allow_worker else "a Worker factory"
        raise ConfigurationError(f"{label} is {type(obj).__name__}, not {wanted}")
    return obj


async def build_worker(source: Worker | WorkerFactory, *, name: str | None = None) -> Worker:
    """The Worker behind ``source``: a Worker is returned as it is; a factory is called
    (and awaited, if it returns an awaitable) in the running event loop.

    Args:
        source: a :class:`~buquet.Worker` or a Worker factory (e.g. from
            :func:`load_worker_factory`).
        name: the setting's name for messages, if any.

    Raises:
        ConfigurationError: ``source`` is neither, or the factory returned something
            other than a Worker.
        Exception: whatever the factory raises (e.g. StorageError from ``connect()``).
    """
    if isinstance(source, Worker):
        return source
    label = f"the {name} factory" if name else "the Worker factory"
    if not callable(source):
        raise ConfigurationError(f"{label} is {type(source).__name__}, not a Worker factory")
    obj: Any = source()
    if inspect.isawaitable(obj):
        obj = await obj
    if not isinstance(obj, Worker):
        raise ConfigurationError(f"{label} returned {type(obj).__name__}, not a buquet.Worker")
    return obj


__all__ = ["WorkerFactory", "build_worker", "load_object", "load_worker_factory", "parse_spec"]
