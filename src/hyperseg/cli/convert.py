"""`hyperseg convert`: an authors' checkpoint (.pth) into a hyperseg checkpoint."""
from __future__ import annotations

import argparse

from .options import check_output


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an authors' checkpoint (.pth) into a hyperseg checkpoint")
    p.add_argument("checkpoint", help="the authors' .pth file")
    p.add_argument("output", help="where to write the hyperseg checkpoint (.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file (never the input)")
    p.add_argument("--config", default=None, help="paper model name, for checkpoints without an 'arch' entry")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..hub.checkpoint import save_model
    from ..hub.official import from_official

    check_output(args.output, "output", args.overwrite, inputs=[args.checkpoint])
    model = from_official(args.checkpoint, config=args.config)
    path = save_model(model, args.output)
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {args.checkpoint} ({model.meta.get('architecture', 'custom')}, {n:,} parameters) -> {path}")
