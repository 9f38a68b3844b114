"""`hyperseg profile`: parameters and GMACs at an input size."""
from __future__ import annotations

import argparse
import json

from .options import add_model_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="count parameters and GMACs at an input size")
    add_model_arguments(p)
    p.add_argument("--height", type=int, default=512, help="input height in pixels")
    p.add_argument("--width", type=int, default=1024, help="input width in pixels")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..profile import profile
    from ..runtime import resolve_model

    model = resolve_model(args.model, allow_untrained=True)  # parameters and MACs do not depend on the weights
    result = profile(model, (args.height, args.width))
    print(json.dumps({"model": args.model, "input": [args.height, args.width], **result}))
