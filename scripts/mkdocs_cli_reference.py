"""MkDocs hook: the page ``cli.md``, generated from hyperseg's argparse parser at build time, so the
reference lists every subcommand and option with its help text and cannot drift from the code."""
from __future__ import annotations

import argparse

from mkdocs.structure.files import File


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


def cli_reference() -> str:
    from hyperseg.cli import build_parser

    parser = build_parser()
    lines = ["# Command line", "", "Generated from the parser of `hyperseg` at build time.", "",
             "```text", parser.format_usage().strip(), "```", ""]
    for name, sub in _subparsers(parser).items():
        lines += [f"## {name}", "", sub.description or "", "", "```text", sub.format_usage().strip(), "```", ""]
        lines += _option_rows(sub) + [""]
    return "\n".join(lines)


def on_files(files, config):
    files.append(File.generated(config, "cli.md", content=cli_reference()))
    return files
