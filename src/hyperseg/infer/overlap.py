"""Threads that overlap reading and writing files with inference: a reader that runs ahead, a writer behind."""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

__all__ = ["prefetch", "Background", "Inline"]


def prefetch(items: Iterator[Any], depth: int = 4) -> Iterator[Any]:
    """Yield ``items`` produced by a reader thread up to ``depth`` ahead (decoding overlaps inference)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    failure: list[BaseException] = []

    def reader() -> None:
        try:
            for item in items:
                q.put(item)
        except BaseException as exc:  # re-raised in the consumer
            failure.append(exc)
        finally:
            q.put(done)

    threading.Thread(target=reader, daemon=True, name="hyperseg-reader").start()
    while (item := q.get()) is not done:
        yield item
    if failure:
        raise failure[0]


class Inline:
    """:class:`Background`'s interface without the thread: ``fn`` runs at ``put``."""

    def __init__(self, fn: Callable[[Any], None]) -> None:
        self.put = fn

    def __enter__(self) -> "Inline":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


class Background:
    """Runs ``fn`` on queued items in a writer thread; leaving the block waits for it and re-raises its error."""

    def __init__(self, fn: Callable[[Any], None], depth: int = 4) -> None:
        self.fn, self.q = fn, queue.Queue(maxsize=depth)
        self.failure: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True, name="hyperseg-writer")

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            if not self.failure:
                try:
                    self.fn(item)
                except BaseException as exc:
                    self.failure.append(exc)

    def put(self, item: Any) -> None:
        if self.failure:
            raise self.failure[0]
        self.q.put(item)

    def __enter__(self) -> "Background":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.q.put(None)
        self.thread.join()
        if self.failure and exc[0] is None:
            raise self.failure[0]
