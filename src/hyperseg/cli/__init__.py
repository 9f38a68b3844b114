"""The ``hyperseg`` command line: one entry point, one subcommand per job.

Each subcommand is a module here with ``add_parser(sub)`` and ``run(args)``; options several of
them share are in :mod:`.options`. This module assembles the parser and turns errors into one line.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

from ..errors import HypersegError
from . import listing, convert, train, evaluate, predict, export, bench, check_data, serve, profile
from .options import resolve_model_argument

__all__ = ["main", "build_parser"]

COMMANDS = (listing, convert, train, evaluate, predict, export, bench, check_data, serve, profile)


def _version() -> str:
    from .. import __version__

    return __version__


class _DefaultsHelpFormatter(argparse.HelpFormatter):
    """Shows each option's default after its help, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperseg", description="HyperSeg semantic segmentation.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    parser.add_argument("--version", action="version", version=f"hyperseg {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:  # in the order `hyperseg --help` lists them
        command.add_parser(sub)
    for command in sub.choices.values():  # `hyperseg predict ... --debug` as well as `hyperseg --debug predict`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        command.formatter_class = _DefaultsHelpFormatter
    return parser


def _one_line(exc: BaseException) -> str:
    """The message of an error, without the traceback text DataLoader workers wrap around it."""
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `train --resume optim.max_iters=9`: overrides may also follow the options
    if extra and getattr(args, "command", None) == "train" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    func: Callable[[argparse.Namespace], Optional[int]] = args.func
    import logging

    logging.basicConfig(level=logging.WARNING, format="hyperseg: %(message)s", stream=sys.stderr)
    logging.getLogger("hyperseg").setLevel(logging.INFO)  # one-time conversions say what they cost
    try:
        resolve_model_argument(args)
        code = func(args)
    except KeyboardInterrupt as exc:
        detail = f": {exc}" if str(exc) else ""  # a stopped training run says where it saved and how to resume
        print(f"hyperseg {args.command}: interrupted{detail}", file=sys.stderr)
        return 130
    except (HypersegError, OSError) as exc:
        if args.debug:
            raise
        # OSError: the environment refused (permissions, a full disk, a missing folder); not a bug
        message = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.filename and exc.strerror \
            else _one_line(exc)
        print(f"hyperseg {args.command}: error: {message}", file=sys.stderr)
        return 2
    return code or 0

