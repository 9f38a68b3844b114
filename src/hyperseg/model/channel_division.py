"""Channel division: how many channels of the context signal each weight mapper reads.

The signal's C channels are cut into units of ``unit`` channels and shared among the weight
layers in proportion to the number of weights each must produce (paper Sec. 3.2, Alg. 1).
Two rules exist and differ only when a layer's share rounds down to one unit or less:

* ``"released"`` (default) -- the authors' released code: the *last* (smallest) group takes
  whatever is left;
* ``"paper"`` -- Algorithm 1: the *first* layer whose share rounds to <= 1 takes what is left.

For every released configuration both rules give the same split (docs/authors-code.md).
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

from ..errors import HypersegError

__all__ = ["divide_channels", "DIVISION_RULES"]

DIVISION_RULES = ("released", "paper")


def divide_channels(channels: int, num_weights: Sequence[int], unit: int, rule: str = "released") -> list[int]:
    """Split ``channels`` among layers that produce ``num_weights`` weights each.

    Returns the channel count per layer, in the order of ``num_weights``; every count is a
    multiple of ``unit``. They sum to ``channels`` except where a group of equal layers cannot
    split its units evenly; the remainder is then left unused, as in the authors' code.
    """
    if rule not in DIVISION_RULES:
        raise HypersegError(f"channel division rule must be one of {DIVISION_RULES}, got {rule!r}")
    if unit <= 0 or channels % unit:
        raise HypersegError(f"signal channels ({channels}) must be a positive multiple of the unit ({unit})")
    if not num_weights or min(num_weights) <= 0:
        raise HypersegError(f"every layer must produce at least one weight, got {list(num_weights)}")
    total_units = channels // unit
    if total_units < len(num_weights):
        raise HypersegError(
            f"{channels} signal channels give {total_units} units of {unit}, fewer than the "
            f"{len(num_weights)} weight layers that each need one"
        )

    # Equal weight counts share one group so they receive equal units.
    order = sorted(range(len(num_weights)), key=lambda i: num_weights[i])
    groups = [list(members) for _, members in itertools.groupby(order, key=lambda i: num_weights[i])]
    groups.sort(key=lambda g: num_weights[g[0]] * len(g), reverse=True)

    ratio = total_units / sum(num_weights)
    remaining = total_units - len(num_weights)
    units = {i: 1 for i in range(len(num_weights))}
    for index, members in enumerate(groups):
        n = len(members)
        share = num_weights[members[0]] * ratio
        last = index == len(groups) - 1
        if last or (rule == "paper" and math.floor(share) <= 1):
            extra = remaining
        else:
            extra = min(math.floor(max(share * n, n) / n) * n - n, remaining)
        for i in members:
            units[i] += extra // n
        remaining -= extra
        if remaining <= 0:
            break
    return [units[i] * unit for i in range(len(num_weights))]
