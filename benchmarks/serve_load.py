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
import io
import json
import os
import tempfile
from functools import partial
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "hyperseg" / "assets" / "camvid_sample_1.png"
# (H, W) that pad to 8 different multiples of 64: each needs its own converted model
VARIED_SIZES = [(360, 480), (300, 400), (420, 560), (240, 320), (480, 640), (200, 260), (330, 700), (520, 380)]


def server_options(args: argparse.Namespace) -> list[str]:
    return ["-m", args.model, "--runtime", args.runtime, "--workers", str(args.workers),
            "--max-queue", str(args.max_queue), "--shapes", args.shapes]


def folder_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def _bodies(image: Path, count: int) -> list[bytes]:
    """The image as PNG at the first ``count`` of :data:`VARIED_SIZES`."""
    from PIL import Image

    base, bodies = Image.open(image).convert("RGB"), []
    for h, w in VARIED_SIZES[:count]:
        buffer = io.BytesIO()
        base.resize((w, h)).save(buffer, format="PNG")
        bodies.append(buffer.getvalue())
    return bodies


def varying_sizes(args: argparse.Namespace) -> dict:
    """One client, ``args.vary_sizes`` image sizes in turn, ``args.cycles`` times: RSS and cache size per cycle."""
    from hyperseg.bench import load_phase, served

    cycles, failed, bodies = [], [], _bodies(args.image, args.vary_sizes)
    with tempfile.TemporaryDirectory(prefix="hyperseg-serve-cache-") as cache:
        env = dict(os.environ, HYPERSEG_CACHE=cache, HYPERSEG_CACHE_MAX_MB=str(args.cache_max_mb))
        with served(server_options(args), env=env) as server:
            for cycle in range(args.cycles):  # a new size may convert first: minutes on a small machine
                phases = [load_phase(f"{server.url}/v1/segment", body, 1, 1, timeout=600) for body in bodies]
                failed += [f for phase in phases for f in phase["failures"]]
                cycles.append({"cycle": cycle + 1, "seconds": round(sum(phase["seconds"] for phase in phases), 1),
                               "rss_mb": round(server.rss_mb(), 1), "cache_mb": round(folder_mb(Path(cache)), 1)})
                print(json.dumps(cycles[-1]), flush=True)
    half = cycles[len(cycles) // 2 - 1] if len(cycles) > 1 else cycles[0]
    return {"model": args.model, "runtime": args.runtime, "shapes": args.shapes,
            "sizes": VARIED_SIZES[: args.vary_sizes], "cache_max_mb": args.cache_max_mb, "cycles": cycles,
            "second_half_growth": {"rss_mb": round(cycles[-1]["rss_mb"] - half["rss_mb"], 1),
                                   "cache_mb": round(cycles[-1]["cache_mb"] - half["cache_mb"], 1)},
            "failed": len(failed), "failures": failed[:5], "server_exit_code": server.exit_code}


def concurrent_load(args: argparse.Namespace) -> dict:
    """One client's requests one after another, then ``args.clients`` at once, against one server."""
    from hyperseg.bench import load_phase, served

    image = args.image.read_bytes()
    with served(server_options(args)) as server:
        url = f"{server.url}/v1/segment"
        load_phase(url, image, args.clients, 3)  # warm-up, concurrent so that every worker compiles and allocates
        rss_before = server.rss_mb()
        single = load_phase(url, image, 1, args.requests)
        concurrent = load_phase(url, image, args.clients, args.requests)
        rss_after = server.rss_mb()
    return {
        "model": args.model, "runtime": args.runtime, "workers": args.workers, "image": args.image.name,
        "single_client": single, "concurrent": concurrent,
        "throughput_ratio": round(concurrent["images_per_s"] / single["images_per_s"], 2),
        "rss_mb_before": round(rss_before, 1), "rss_mb_after": round(rss_after, 1),
        "server_log_errors": server.log_errors()[:5], "server_exit_code": server.exit_code,
    }


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
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--vary-sizes", type=int, default=0, help="test growth with this many image sizes (max 8)")
    parser.add_argument("--cycles", type=int, default=3, help="with --vary-sizes: passes over the sizes")
    parser.add_argument("--cache-max-mb", type=float, default=200, help="with --vary-sizes: the server's cache bound")
    args = parser.parse_args()
    if not args.vary_sizes and args.clients > args.workers + args.max_queue:
        raise SystemExit(f"--clients {args.clients} exceeds the server's capacity ({args.workers} workers + "
                         f"{args.max_queue} queued): requests would be refused with 503 by design")
    from hyperseg.bench import run_script

    run_script(partial(measure, args))


def measure(args: argparse.Namespace) -> None:
    """The load test or the growth test; the result printed and recorded; failures end the script."""
    from hyperseg.bench import check_record_path, provenance, write_record

    check_record_path(args.out, args.overwrite)
    result = {**provenance(), **(varying_sizes(args) if args.vary_sizes else concurrent_load(args))}
    print(json.dumps(result, indent=2))
    if args.out:
        write_record(args.out, result, overwrite=args.overwrite)
    phases = [result.get("single_client", {}), result.get("concurrent", {})]
    if result.get("failed") or any(p.get("failed") for p in phases) or result.get("server_log_errors") \
            or result["server_exit_code"] != 0:
        raise SystemExit("load test: failures (see above)")


if __name__ == "__main__":
    main()
