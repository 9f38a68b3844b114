"""The ``hyperseg`` command line: one entry point, one subcommand per job."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional, Sequence

__all__ = ["main"]


class CLIError(Exception):
    """A user error: printed as one line, no traceback."""


def _cmd_list(args: argparse.Namespace) -> None:
    from .model import list_models, model_cfg

    for name in list_models(args.pattern):
        cfg = model_cfg(name)
        extra = f"  ({cfg['dataset']}, {len(cfg['class_names'])} classes, {cfg['input_size'][1]}x{cfg['input_size'][0]})" if cfg else ""
        print(name + extra)


def _cmd_convert(args: argparse.Namespace) -> None:
    from .checkpoint import save_model
    from .official import from_official

    model = from_official(args.checkpoint, config=args.config)
    path = save_model(model, args.output)
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {args.checkpoint} ({model.meta.get('architecture', 'custom')}, {n:,} parameters) -> {path}")


def _cmd_profile(args: argparse.Namespace) -> None:
    from .checkpoint import builtin_weights, load_model
    from .model import create_model, list_models
    from .profile import profile

    model = create_model(args.model) if args.model in list_models() and args.model not in builtin_weights() else load_model(args.model)
    result = profile(model, (args.height, args.width))
    print(json.dumps({"model": args.model, "input": [args.height, args.width], **result}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperseg", description="HyperSeg semantic segmentation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'hyperseg_*camvid'")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("convert", help="convert an authors' checkpoint (.pth) into a hyperseg checkpoint")
    p.add_argument("checkpoint", help="the authors' .pth file")
    p.add_argument("output", help="where to write the hyperseg checkpoint (.pt)")
    p.add_argument("--config", default=None, help="paper model name, for checkpoints without an 'arch' entry")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("profile", help="count parameters and GMACs at an input size")
    p.add_argument("model", help="registered model name or checkpoint path")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=1024)
    p.set_defaults(func=_cmd_profile)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (CLIError, ValueError, TypeError, FileNotFoundError, KeyError, ImportError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"hyperseg {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hyperseg {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
