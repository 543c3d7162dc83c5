"""Worker threads that read while one thread writes (``--max-connections``).

Folders are independent on the source side, so several connections can
read several folders at once. The destination is not: a SQLite connection,
an mbox file and the exactly-once state of an IMAP destination are each
built for one writer, and every guarantee in :mod:`migrate.engine.transfer` rests on
its writes happening in order. So workers never touch the destination or
the reporter themselves: they hand those calls to a :class:`CallQueue` that
the calling thread serves, one call at a time. Parallelism buys overlapped
network and server time; the durable write path stays exactly as serial
(and as crash-safe) as with one connection.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class Aborted(Exception):
    """Raised in a worker whose run was stopped (another worker failed, or Ctrl-C)."""


_Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], "Future[Any]"]


class CallQueue:
    """Calls made on worker threads, run one at a time on the serving thread."""

    def __init__(self, fatal: Callable[[Exception], bool] = lambda exc: True) -> None:
        """``fatal`` says which errors of a call end the run: after one, no further
        call runs (the serial engine would not have made them either)."""
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._fatal = fatal

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the serving thread and return its result (or raise its error)."""
        if self._closed.is_set():
            raise Aborted("the run was stopped")
        future: Future[Any] = Future()
        self._queue.put((fn, args, kwargs, future))
        return future.result()

    def done(self) -> None:
        """A worker says it will make no more calls."""
        self._queue.put(None)

    def serve(self, workers: int) -> None:
        """Run calls until ``workers`` workers have called :meth:`done`.

        An exception from a call goes back to the worker that made it (a fatal
        one also fails every later call with :class:`Aborted`); only an
        interrupt (KeyboardInterrupt, SystemExit) ends serving, after the
        waiting workers have been told to stop.
        """
        remaining = workers
        try:
            while remaining:
                item = self._queue.get()
                if item is None:
                    remaining -= 1
                    continue
                fn, args, kwargs, future = item
                if self._closed.is_set():
                    future.set_exception(Aborted("the run was stopped"))
                    continue
                try:
                    future.set_result(fn(*args, **kwargs))
                except Exception as exc:
                    if self._fatal(exc):
                        self._closed.set()
                    future.set_exception(exc)
                except BaseException:
                    future.set_exception(Aborted("the run was interrupted"))
                    raise
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Fail every waiting and future call, so no worker blocks forever."""
        self._closed.set()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[3].set_exception(Aborted("the run was stopped"))


class Forwarding:
    """A proxy that passes every method call of ``target`` through :meth:`_call`;
    attribute reads that are not methods pass straight through (they are set
    once, before any worker starts)."""

    def __init__(self, target: object) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def forward(*args: Any, **kwargs: Any) -> Any:
            return self._call(attr, *args, **kwargs)

        return forward

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


class Serialized(Forwarding):
    """Method calls run through a :class:`CallQueue`: how workers reach the
    destination and the reporter."""

    def __init__(self, target: object, calls: CallQueue) -> None:
        super().__init__(target)
        self._calls = calls

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._calls.call(fn, *args, **kwargs)


__all__ = ["Aborted", "CallQueue", "Forwarding", "Serialized"]
