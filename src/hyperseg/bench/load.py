"""Concurrent HTTP load: throughput and per-request latency of a server as its clients see them.

Each client is a thread with its own connection sending requests one after another, so N clients
keep at most N requests in flight, as N users of the service would. Failures are counted and a few
kept, not raised: a load test reports how many requests failed, it does not stop at the first.
"""
from __future__ import annotations

import statistics
import threading
import time
from typing import Any

__all__ = ["load_phase"]


def _client(url: str, body: bytes, content_type: str, count: int, timeout: float, latencies: list,
            failures: list) -> None:
    import httpx

    with httpx.Client(timeout=timeout) as client:
        for _ in range(count):
            start = time.perf_counter()
            try:
                r = client.post(url, content=body, headers={"content-type": content_type})
                if not (r.status_code == 200 and r.content[:4] == b"\x89PNG"):
                    failures.append(f"{r.status_code}: {r.text[:200]}")
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
                continue
            latencies.append((time.perf_counter() - start) * 1000)


def load_phase(url: str, body: bytes, clients: int, requests: int, *, content_type: str = "image/png",
               timeout: float = 120) -> dict[str, Any]:
    """``clients`` concurrent clients each POST ``body`` to ``url`` ``requests`` times; a PNG answer is a success.

    Returns the throughput (successful requests per second of the whole phase), p50/p95 latency in
    ms, and the number of failed requests with the first five reasons. ``timeout``: seconds one
    request may take before it counts as failed.
    """
    latencies: list[float] = []
    failures: list[str] = []
    threads = [threading.Thread(target=_client, args=(url, body, content_type, requests, timeout, latencies, failures))
               for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "clients": clients, "requests": clients * requests, "failed": len(failures), "failures": failures[:5],
        "seconds": round(seconds, 2), "images_per_s": round(len(latencies) / seconds, 2),
        "p50_ms": round(statistics.median(ordered), 1) if ordered else None,
        "p95_ms": round(ordered[max(0, int(round(0.95 * len(ordered))) - 1)], 1) if ordered else None,
    }
