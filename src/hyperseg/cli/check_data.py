"""`hyperseg check-data`: every pair of a prepared dataset read as training reads it."""
from __future__ import annotations

import argparse
import sys

from ..errors import HypersegError
from .options import whole_number, split_list, add_dataset_arguments, dataset_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-data", help="check a prepared dataset folder (every pair read as training reads it)")
    add_dataset_arguments(p)
    p.add_argument("--splits", default="train,val", help="comma-separated splits to check")
    p.add_argument("--limit", type=whole_number(1), default=None, help="check only the first N pairs of each split")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import check_drive_pattern, drive_counts, split_names
    from ..data.check import check_dataset

    splits = split_list(args.splits)
    if not splits:  # "ok" must never stand for nothing checked
        raise HypersegError(f"--splits={args.splits!r} names no split; expected comma-separated split names, "
                            f"e.g. train,val")
    for split in splits:  # every value refused before the first report
        split_names(split, "--splits")
    check_drive_pattern(args.drive_pattern, "--drive-pattern")
    problems = 0
    for split in splits:
        dataset = dataset_from_args(args, split)
        report = check_dataset(dataset, limit=args.limit)
        print(report.summary(dataset.classes))
        if args.drive_pattern or dataset.drive_pattern:
            drives = drive_counts(dataset, args.drive_pattern)
            print("  drives: " + ", ".join(f"{d or '(no match)'} ({n})" for d, n in sorted(drives.items(),
                                                                                         key=lambda kv: str(kv[0]))))
        for message in report.errors:
            print(f"  bad: {message}", file=sys.stderr)
        problems += len(report.errors)
    if problems:
        print(f"hyperseg check-data: {problems} bad pairs; fix or remove them before training", file=sys.stderr)
        return 2
    print("ok: every pair reads, sizes match, labels are in range")
    return 0
