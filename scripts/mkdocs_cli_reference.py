"""MkDocs hook: the page ``cli.md``, generated from hyperseg's argparse parser at build time, so the
reference lists every subcommand and option with its help text and cannot drift from the code.

The parser is the one of the checkout that ``mkdocs.yml`` belongs to (its ``src/``), never an
installed hyperseg: building the docs of one checkout must not describe another's command line. It
is imported in a fresh interpreter with that ``src/`` first on the path, so that neither an installed
copy nor one this process has already imported can stand in for it, and the build fails if the
source tree is missing or another copy was imported anyway.

Run as a script, ``python scripts/mkdocs_cli_reference.py SRC`` prints the page for ``SRC``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps no public list of subcommands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| option | default | what it does |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}` (positional)"
        default = "" if action.default in (None, False, argparse.SUPPRESS) else f"`{action.default}`"
        text = (action.help or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| {names} | {default} | {text} |")
    return rows


def _page(build_parser: Callable[[], argparse.ArgumentParser]) -> str:
    parser = build_parser()
    lines = ["# Command line", "", "Generated from the parser of `hyperseg` at build time.", "",
             "```text", parser.format_usage().strip(), "```", ""]
    for name, sub in _subparsers(parser).items():
        lines += [f"## {name}", "", sub.description or "", "", "```text", sub.format_usage().strip(), "```", ""]
        lines += _option_rows(sub) + [""]
    return "\n".join(lines)


class SourceTreeError(RuntimeError):
    """The checkout's source tree is missing, or its command line could not be imported from it."""


def cli_reference(src: Path) -> str:
    """The page for the hyperseg whose package is ``src/hyperseg`` (``src``: a checkout's ``src`` folder)."""
    src = Path(src).resolve()
    entry = src / "hyperseg" / "cli" / "__init__.py"
    if not entry.is_file():
        raise SourceTreeError(f"{entry} not found; the CLI page is generated from the "
                              f"source tree beside mkdocs.yml, so build the docs from a full checkout")
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(src)], capture_output=True,
                          encoding="utf-8", env={**os.environ, "PYTHONIOENCODING": "utf-8"}, timeout=600)
    if done.returncode != 0:
        last = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:] or ["no message"]
        raise SourceTreeError(f"cannot generate the CLI page from {src}: {last[0]}")
    return done.stdout


def on_files(files, config):
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    src = Path(config.config_file_path).resolve().parent / "src"
    try:
        content = cli_reference(src)
    except SourceTreeError as exc:
        raise PluginError(str(exc)) from None
    files.append(File.generated(config, "cli.md", content=content))
    return files


def _main(src: Path) -> None:
    """The page for ``src``, printed: runs in the child interpreter :func:`cli_reference` starts."""
    src = src.resolve()
    here = Path(__file__).resolve().parent  # the scripts folder, which running this file put first on the path
    sys.path[:] = [str(src)] + [p for p in sys.path if Path(p or ".").resolve() != here]  # src before site-packages
    import hyperseg.cli

    origin = Path(hyperseg.cli.__file__).resolve()
    if origin != src / "hyperseg" / "cli" / "__init__.py":
        sys.exit(f"imported hyperseg.cli from {origin}, not from {src}")
    sys.stdout.write(_page(hyperseg.cli.build_parser))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: mkdocs_cli_reference.py SRC  (a checkout's src folder)")
    _main(Path(sys.argv[1]))
