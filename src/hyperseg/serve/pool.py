"""A bounded pool of inference workers, each with its own model, fed from the event loop."""
from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

__all__ = ["InferencePool", "PoolBusy", "PoolNotReady"]


class PoolBusy(Exception):
    """Every worker is busy and the queue is full: the caller should answer 503."""


class PoolNotReady(Exception):
    """The models are still loading (or failed to load)."""


class InferencePool:
    """``workers`` threads, each holding one predictor, and at most ``max_queue`` requests waiting.

    Inference runs in the threads, never on the event loop. A request beyond ``workers +
    max_queue`` in flight is refused at once with :class:`PoolBusy` rather than queued without
    bound. Each worker owns its predictor, so runtimes that are not thread-safe are never shared.
    """

    def __init__(self, make_predictor: Callable[[], Any], *, workers: int = 1, max_queue: int = 16) -> None:
        self.workers, self.max_queue = workers, max_queue
        self._make = make_predictor
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="hyperseg-infer")
        self._idle: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._in_flight = 0
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self.error: Optional[BaseException] = None
        self.predictor: Any = None  # the first one: its metadata describes the model

    def load(self) -> None:
        """Build every worker's predictor (call it from a thread: it takes seconds)."""
        try:
            for _ in range(self.workers):
                predictor = self._make()
                self.predictor = self.predictor or predictor
                self._idle.put(predictor)
        except BaseException as exc:  # reported by /healthz and every request
            self.error = exc
            raise
        self.ready.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(predictor, *args)`` in a worker thread, or :class:`PoolBusy` when full."""
        if not self.ready.is_set():
            raise PoolNotReady(str(self.error) if self.error else "the model is still loading")
        with self._lock:
            if self._in_flight >= self.workers + self.max_queue:
                raise PoolBusy(f"{self._in_flight} requests in flight; the limit is {self.workers} running "
                               f"+ {self.max_queue} queued")
            self._in_flight += 1
        try:
            return await asyncio.wrap_future(self._executor.submit(self._call, fn, args))
        finally:
            with self._lock:
                self._in_flight -= 1

    def _call(self, fn: Callable[..., Any], args: tuple) -> Any:
        predictor = self._idle.get()
        try:
            return fn(predictor, *args)
        finally:
            self._idle.put(predictor)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
