"""`hyperseg serve`: a model over HTTP, with a web page."""
from __future__ import annotations

import argparse

from .options import runtime_options, onnx_meta, add_runtime_arguments, add_model_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP, with a web page (needs the serve extra)")
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but loopback is reachable from other machines")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--workers", type=int, default=1,
                   help="inference workers, each with its own copy of the model, sharing the CPU cores")
    p.add_argument("--max-queue", type=int, default=16,
                   help="requests that may wait for a worker; beyond that the server answers 503 with Retry-After")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload, in MB")
    p.add_argument("--max-megapixels", type=float, default=50.0,
                   help="largest accepted image, in megapixels (checked from the header, before decoding)")
    p.add_argument("--upload-timeout", type=float, default=15.0,
                   help="seconds an upload may send nothing before it is cut off with 408 (default: 15)")
    add_runtime_arguments(p, shapes="dynamic")  # a server meets new sizes for ever: one conversion for all
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..serve import run_server

    run_server(args.model, host=args.host, port=args.port, workers=args.workers, max_queue=args.max_queue,
               max_upload_mb=args.max_upload_mb, max_megapixels=args.max_megapixels,
               upload_timeout_s=args.upload_timeout, options=runtime_options(args), meta=onnx_meta(args))
