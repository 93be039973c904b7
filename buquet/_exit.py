"""Process exit with obstore loaded: keep the interpreter from finalizing while one of
obstore's runtime threads is still in Python.

Why: obstore (Rust ``object_store`` on tokio, bridged by ``pyo3-async-runtimes``)
resolves every asyncio future from a thread of its own runtime. That thread takes the
GIL and calls ``loop.call_soon_threadsafe``, whose wake-up write to the loop's
self-pipe releases the GIL and takes it back; a request cancelled on the Python side
(a worker's monitor scan stopped at shutdown) still sends a runtime thread in to look
at its future. The awaiting coroutine can be resumed, finish, and the program reach
``Py_Finalize`` while that thread is between the two halves. From then on CPython
(3.11-3.13) ends any thread that asks for the GIL with ``pthread_exit``; the forced
unwind cannot cross the Rust frames under it, so the process aborts — SIGABRT, exit
status 134 — after it had finished correctly (gdb: ``take_gil`` → ``PyThread_exit_thread``
→ ``abort`` on a ``tokio-rt-worker`` thread inside ``pyo3_async_runtimes::set_result``,
while the main thread is in ``Py_FinalizeEx``). A bare ``asyncio.run`` + obstore script
does it too; the synchronous obstore API does not (no runtime thread enters Python).

The runtime is a process-wide static that obstore never shuts down and offers no way to
join, so the fix is on our side of the race: :func:`quiesce_native_threads_at_exit`
registers an :mod:`atexit` hook — atexit runs before the interpreter is marked
finalizing — that hands the GIL over until no thread Python did not start has run
Python for a short settle time. :class:`~buquet.storage.s3.S3Store` registers it, so
every entry point that touches S3 (the CLI, ``buquet worker``, the examples, plain
library scripts) gets it.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time

#: No runtime thread seen in Python for this long: done. Also covers the callback of a
#: request cancelled just before exit, which enters Python within a few milliseconds.
SETTLE_SECONDS = 0.02
#: Never delay the exit longer than this (a foreign thread that keeps running Python).
MAX_SECONDS = 2.0

_registered = False
_lock = threading.Lock()


def native_threads_in_python() -> bool:
    """Whether a thread that Python did not start (a tokio thread of obstore) has Python
    code on its stack right now — running, or waiting to take the GIL back in the middle
    of a call (its frame stays current while it waits)."""
    dummy = getattr(threading, "_DummyThread", ())
    own = {t.ident for t in threading.enumerate() if not isinstance(t, dummy)}
    return any(ident not in own for ident in sys._current_frames())


def quiesce_native_threads(settle_seconds: float = SETTLE_SECONDS, max_seconds: float = MAX_SECONDS) -> None:
    """Release the GIL in short sleeps until no native thread has been in Python for
    ``settle_seconds`` (or ``max_seconds`` passed). A thread waiting for the GIL gets it
    during the sleeps and leaves Python before the interpreter starts finalizing."""
    start = quiet_since = time.monotonic()
    while True:
        time.sleep(0.001)
        now = time.monotonic()
        if now - start >= max_seconds:
            return
        if native_threads_in_python():
            quiet_since = now
        elif now - quiet_since >= settle_seconds:
            return


def quiesce_native_threads_at_exit() -> None:
    """Register :func:`quiesce_native_threads` to run at interpreter exit (once per
    process; cheap to call again)."""
    global _registered
    if _registered:
        return
    with _lock:
        if not _registered:
            atexit.register(quiesce_native_threads)
            _registered = True


__all__ = ["quiesce_native_threads", "quiesce_native_threads_at_exit", "native_threads_in_python"]
