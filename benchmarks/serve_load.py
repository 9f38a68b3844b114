"""Load test of `hyperseg serve` on loopback: N concurrent clients against a single-client baseline.

    python benchmarks/serve_load.py --clients 8 --requests 25 --runtime auto
    python benchmarks/serve_load.py --vary-sizes 8 --cycles 8 --cache-max-mb 200 [--shapes static]


It starts a real uvicorn server (`python -m hyperseg serve`) on a free loopback port, warms it up,
then measures (1) one client sending its requests one after another and (2) N clients at once,
each sending M requests. It reports throughput (images/s), p50/p95 latency per request, every
failed request, the server's resident memory before and after the concurrent phase, and any
error line in the server's log. Run it on an idle machine: the numbers are ratios of phases
measured side by side in one run.

``--vary-sizes N`` tests growth instead: one client sends the image resized to N different sizes
(each a different padded size, so each needs its own compiled model), ``--cycles`` times over,
to a server whose converted-model cache is a fresh folder bounded by ``--cache-max-mb``. After
every cycle it reads the server's resident memory and the cache's size on disk: both must stay
flat once warm, since the server keeps at most a few compiled sizes in memory and converts once
for every size (``--shapes dynamic``, serve's default) or once per size with the least recently
used files deleted (``--shapes static``). It reports the growth over the second half of the cycles.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Optional

import httpx

from hyperseg.bench.harness import machine_info

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "hyperseg" / "assets" / "camvid_sample_1.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_server(args: argparse.Namespace, port: int, log_path: Path, env: Optional[dict] = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hyperseg", "serve", "-m", args.model, "--port", str(port), "--runtime", args.runtime,
           "--workers", str(args.workers), "--max-queue", str(args.max_queue), "--shapes", args.shapes]
    proc = subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become healthy")


def client_run(url: str, image: bytes, count: int, latencies: list, failures: list) -> None:
    with httpx.Client(timeout=120) as client:
        for _ in range(count):
            start = time.perf_counter()
            try:
                r = client.post(url, content=image, headers={"content-type": "image/png"})
                ok = r.status_code == 200 and r.content[:4] == b"\x89PNG"
                if not ok:
                    failures.append(f"{r.status_code}: {r.text[:200]}")
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
                continue
            latencies.append((time.perf_counter() - start) * 1000)


def phase(url: str, image: bytes, clients: int, requests: int) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    threads = [threading.Thread(target=client_run, args=(url, image, requests, latencies, failures))
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


# (H, W) that pad to 8 different multiples of 64: each needs its own converted model
VARIED_SIZES = [(360, 480), (300, 400), (420, 560), (240, 320), (480, 640), (200, 260), (330, 700), (520, 380)]


def folder_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def varying_sizes(args: argparse.Namespace) -> dict:
    """One client, ``args.vary_sizes`` image sizes in turn, ``args.cycles`` times: RSS and cache size per cycle."""
    import io

    from PIL import Image

    base = Image.open(args.image).convert("RGB")
    bodies = []
    for h, w in VARIED_SIZES[: args.vary_sizes]:
        buffer = io.BytesIO()
        base.resize((w, h)).save(buffer, format="PNG")
        bodies.append(buffer.getvalue())
    port = free_port()
    log_path = Path(f"/tmp/hyperseg_serve_load_{port}.log")
    with tempfile.TemporaryDirectory(prefix="hyperseg-serve-cache-") as cache:
        env = dict(os.environ, HYPERSEG_CACHE=cache, HYPERSEG_CACHE_MAX_MB=str(args.cache_max_mb))
        proc = start_server(args, port, log_path, env)
        url = f"http://127.0.0.1:{port}/v1/segment"
        cycles, failures = [], []
        try:
            with httpx.Client(timeout=600) as client:
                for cycle in range(args.cycles):
                    start = time.perf_counter()
                    for body in bodies:
                        r = client.post(url, content=body, headers={"content-type": "image/png"})
                        if r.status_code != 200:
                            failures.append(f"{r.status_code}: {r.text[:200]}")
                    cycles.append({"cycle": cycle + 1, "seconds": round(time.perf_counter() - start, 1),
                                   "rss_mb": round(rss_mb(proc.pid), 1), "cache_mb": round(folder_mb(Path(cache)), 1)})
                    print(json.dumps(cycles[-1]), flush=True)
        finally:
            proc.terminate()
            exit_code = proc.wait(120)
    half = cycles[len(cycles) // 2 - 1] if len(cycles) > 1 else cycles[0]
    return {"machine": machine_info(), "model": args.model, "runtime": args.runtime, "shapes": args.shapes,
            "sizes": VARIED_SIZES[: args.vary_sizes], "cache_max_mb": args.cache_max_mb, "cycles": cycles,
            "second_half_growth": {"rss_mb": round(cycles[-1]["rss_mb"] - half["rss_mb"], 1),
                                   "cache_mb": round(cycles[-1]["cache_mb"] - half["cache_mb"], 1)},
            "failed": len(failures), "failures": failures[:5], "server_exit_code": exit_code}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="camvid", help="model source (default: camvid)")
    parser.add_argument("--runtime", default="auto", help="server runtime (default: auto)")
    parser.add_argument("--shapes", default="dynamic", choices=["dynamic", "static"],
                        help="how the server converts the model (default: dynamic, serve's default)")
    parser.add_argument("--workers", type=int, default=1, help="server inference workers (default: 1)")
    parser.add_argument("--max-queue", type=int, default=16, help="server queue depth (default: 16)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: 8)")
    parser.add_argument("--requests", type=int, default=25, help="requests per client (default: 25)")
    parser.add_argument("--image", type=Path, default=SAMPLE, help="image to send (default: the bundled sample)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--vary-sizes", type=int, default=0, help="test growth with this many image sizes (max 8)")
    parser.add_argument("--cycles", type=int, default=3, help="with --vary-sizes: passes over the sizes")
    parser.add_argument("--cache-max-mb", type=float, default=200, help="with --vary-sizes: the server's cache bound")
    args = parser.parse_args()
    if args.vary_sizes:
        result = varying_sizes(args)
        print(json.dumps(result, indent=2))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2))
        if result["failed"] or result["server_exit_code"] != 0:
            raise SystemExit("load test: failures (see above)")
        return
    if args.clients > args.workers + args.max_queue:
        raise SystemExit(f"--clients {args.clients} exceeds the server's capacity ({args.workers} workers + "
                         f"{args.max_queue} queued): requests would be refused with 503 by design")

    image = args.image.read_bytes()
    port = free_port()
    log_path = Path(f"/tmp/hyperseg_serve_load_{port}.log")
    proc = start_server(args, port, log_path)
    url = f"http://127.0.0.1:{port}/v1/segment"
    try:
        phase(url, image, args.clients, 3)  # warm-up, concurrent so that every worker compiles and allocates
        rss_before = rss_mb(proc.pid)
        single = phase(url, image, 1, args.requests)
        concurrent = phase(url, image, args.clients, args.requests)
        rss_after = rss_mb(proc.pid)
    finally:
        proc.terminate()
        exit_code = proc.wait(120)
    log = log_path.read_text()
    errors = [line for line in log.splitlines() if "ERROR" in line or "Traceback" in line
              or (" /v1/segment " in line and " 200 " not in line)]
    result = {
        "machine": machine_info(),
        "model": args.model, "runtime": args.runtime, "workers": args.workers, "image": args.image.name,
        "single_client": single, "concurrent": concurrent,
        "throughput_ratio": round(concurrent["images_per_s"] / single["images_per_s"], 2),
        "rss_mb_before": round(rss_before, 1), "rss_mb_after": round(rss_after, 1),
        "server_log_errors": errors[:5], "server_exit_code": exit_code,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    if single["failed"] or concurrent["failed"] or errors or exit_code != 0:
        raise SystemExit("load test: failures (see above)")


if __name__ == "__main__":
    main()
