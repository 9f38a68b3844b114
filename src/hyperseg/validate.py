"""The one checker for configs, checkpoint metadata and ONNX metadata.

A value is checked in two steps: its type against an annotation (``Optional``, ``list[...]``,
``tuple[...]``, ``Literal``, scalars), then its range against a :class:`Rule`, a predicate that
carries the words for what it accepts. Every refusal is one line in one format::

    <where>: <key>=<value> has the wrong type; expected <type in words>
    <where>: <key>=<value> is out of range; expected <range in words>

``where`` is the file the value came from, or what holds it ("config", "HyperSeg config"). A bool
is never taken for a number, and an integer is taken where a number is expected.

This is a small module rather than pydantic (only in the ``serve`` extra) because the schemas are
dataclasses and a table with cross-field checks, and each refusal must be one line naming the file,
the key and the value, which pydantic's multi-line reports are not.
"""
from __future__ import annotations

import math
import types
import typing
from typing import Any, Callable, Iterable, Literal, Mapping, Optional, Union

from .errors import HypersegError

__all__ = ["Rule", "WRONG_TYPE", "OUT_OF_RANGE", "refusal", "reject_unknown", "fits", "describe", "check_value",
           "check_range", "check_fields", "is_number", "finite_number", "whole", "at_least", "positive", "within",
           "one_of", "list_of", "either"]

WRONG_TYPE = "has the wrong type"
OUT_OF_RANGE = "is out of range"
SHOWN_CHARS = 80  # a value's repr is cut here in a message: a refusal stays one readable line


# ------------------------------------------------------------------------------------------ messages

def shown(value: Any) -> str:
    """``repr(value)``, cut to :data:`SHOWN_CHARS` characters."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def refusal(where: str, key: str, value: Any, expected: str, verdict: str = OUT_OF_RANGE) -> HypersegError:
    """The one-line error for ``key=value`` read from ``where``: ``verdict`` (:data:`WRONG_TYPE`,
    :data:`OUT_OF_RANGE`, or which other field it disagrees with) and what is ``expected``."""
    return HypersegError(f"{where}: {key}={shown(value)} {verdict}; expected {expected}")


def reject_unknown(given: Iterable[Any], valid: Iterable[str], where: str, what: str = "key", prefix: str = "") -> None:
    """Refuse the keys of ``given`` that are not ``valid``, listing the valid ones (each named ``prefix`` + key)."""
    valid = sorted(valid)
    unknown = sorted(set(given) - set(valid), key=str)  # a YAML key may be a number
    if unknown:
        named = [f"{prefix}{k}" if prefix else k for k in unknown]
        raise HypersegError(f"{where}: unknown {what}(s) {named}; valid {what}s: {[prefix + k for k in valid]}")


def either(choices: Iterable[Any]) -> str:
    """``"a, b or c"``."""
    words = [str(c) for c in choices]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


# -------------------------------------------------------------------------------------- range rules

class Rule:
    """A range or shape check on a value whose type already fits, and what it accepts, in words.

    ``rule(value)`` is False, never an exception, for a value it cannot even compare."""

    __slots__ = ("expected", "_test")

    def __init__(self, expected: str, test: Callable[[Any], bool]) -> None:
        self.expected = expected
        self._test = test

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self._test(value))
        except (TypeError, ValueError):
            return False

    def described(self, expected: str) -> "Rule":
        """The same check, in other words (a colour is clearer as "[r, g, b]" than as "3 values")."""
        return Rule(expected, self._test)

    def __repr__(self) -> str:
        return f"Rule({self.expected!r})"


def is_number(value: Any) -> bool:
    """An int or float, not a bool, neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def finite_number() -> Rule:
    return Rule("a finite number", is_number)


def whole(low: int, high: Optional[int] = None) -> Rule:
    """An int (not a bool) in ``low..high``, both inclusive; no upper bound without ``high``."""
    expected = f"a whole number {low}..{high}" if high is not None else f"a whole number >= {low}"
    return Rule(expected, lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v
                and (high is None or v <= high))


def at_least(low: float) -> Rule:
    return Rule(f">= {low:g}", lambda v: is_number(v) and v >= low)


def positive() -> Rule:
    return Rule("> 0", lambda v: is_number(v) and v > 0)


def within(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Rule:
    """A finite number between ``low`` and ``high``, each bound inclusive unless it is open."""
    expected = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return Rule(expected, lambda v: is_number(v) and (low < v if low_open else low <= v)
                and (v < high if high_open else v <= high))


def one_of(*choices: Any) -> Rule:
    """Equal to one of ``choices`` (True is not 1 here)."""
    return Rule(either(choices), lambda v: any(v == c and isinstance(v, bool) == isinstance(c, bool)
                                               for c in choices))


def list_of(item: Optional[Rule] = None, length: Union[int, tuple[int, int], None] = None) -> Rule:
    """A list or tuple of ``length`` values (a count, or inclusive ``(fewest, most)``), each passing ``item``."""
    if isinstance(length, int):
        low, high, count = length, length, f"{length} values"
    elif length is not None:
        (low, high), count = length, f"{length[0]} to {length[1]} values"
    else:
        low, high, count = 0, math.inf, "a list of values"
    return Rule(f"{count}, each {item.expected}" if item else count,
                lambda v: isinstance(v, (list, tuple)) and low <= len(v) <= high
                and all(item is None or item(x) for x in v))


# ----------------------------------------------------------------------------------------- types

_UNIONS = (Union, getattr(types, "UnionType", Union))  # Optional[int] and, on Python 3.10+, int | None
_SCALAR_WORDS = {bool: ("true or false", "true or false values"), int: ("an integer", "integers"),
                 float: ("a finite number", "finite numbers"), str: ("text", "text"),
                 dict: ("a mapping", "mappings"), type(None): ("null", "nulls")}


class _NoFit(Exception):
    """The value does not fit the annotation (turned into a one-line refusal by :func:`check_value`)."""


def describe(tp: Any, plural: bool = False) -> str:
    """The annotation ``tp`` in words: ``Optional[list[int]]`` is "a list of integers or null"."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in _UNIONS:
        return " or ".join(describe(a, plural) for a in args)
    if origin is Literal:
        return either(args)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(set(args)) > 1:
            return f"[{', '.join(describe(a) for a in args)}]"
        return f"{'lists' if plural else 'a list'} of {len(args)} {describe(args[0], True)}"
    if origin in (list, tuple) or tp in (list, tuple):
        return f"{'lists' if plural else 'a list'} of {describe(args[0], True) if args else 'values'}"
    if origin is dict:
        tp = dict
    if tp in _SCALAR_WORDS:
        return _SCALAR_WORDS[tp][plural]
    return "anything" if tp is Any else getattr(tp, "__name__", str(tp))


def _conform(value: Any, tp: Any, coerce: bool) -> Any:
    """``value`` fitted to ``tp``, or raise :class:`_NoFit`. Without ``coerce`` the value comes back as
    it is; annotations this module does not know (``Any``, classes) accept anything."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in _UNIONS:
        for option in args:
            try:
                return _conform(value, option, coerce)
            except _NoFit:
                continue
        raise _NoFit
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _NoFit
    if origin in (list, tuple) or tp in (list, tuple):
        return _conform_sequence(value, tp, coerce)
    if origin is dict or tp is dict:
        if isinstance(value, dict):
            return value
        raise _NoFit
    if tp is type(None) or tp in _SCALAR_WORDS:
        return _conform_scalar(value, tp, coerce)
    return value


def _conform_sequence(value: Any, tp: Any, coerce: bool) -> Any:
    args = typing.get_args(tp)
    kind = tuple if (typing.get_origin(tp) or tp) is tuple else list
    if not isinstance(value, (list, tuple) if coerce else kind):
        raise _NoFit
    if kind is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _NoFit
        items = [_conform(v, a, coerce) for v, a in zip(value, args)]
    else:
        items = [_conform(v, args[0], coerce) for v in value] if args else list(value)
    return kind(items) if coerce else value


def _conform_scalar(value: Any, tp: Any, coerce: bool) -> Any:
    if isinstance(value, bool) and tp is not bool:
        raise _NoFit  # True is an int to Python, never to a config
    if coerce:
        value = _converted(value, tp)
    if tp is float:
        fits_type = isinstance(value, (int, float)) and math.isfinite(value)
    else:
        fits_type = isinstance(value, tp)
    if not fits_type:
        raise _NoFit
    return value


def _converted(value: Any, tp: Any) -> Any:
    """``value`` in the form ``tp`` wants, where YAML left it in another: "1e-3" (PyYAML reads it as
    text) as 0.001, the integer 1 as 1.0, 2.0 as the integer 2, "true" as True, a number as text.
    Anything else comes back unchanged, to be refused."""
    try:
        if tp is float and isinstance(value, (int, str)):
            return float(value)
        if tp is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if tp is int and isinstance(value, str):
            return int(value)
        if tp is bool and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if tp is str and isinstance(value, (int, float)):
            return str(value)
    except (ValueError, OverflowError):
        pass
    return value


def fits(value: Any, tp: Any) -> bool:
    """Whether plain data ``value`` fits the annotation ``tp`` as it is."""
    try:
        _conform(value, tp, False)
    except _NoFit:
        return False
    return True


# ---------------------------------------------------------------------------------------- checking

def check_range(value: Any, rule: Optional[Rule], where: str, key: str) -> None:
    """Refuse a value that ``rule`` does not accept; None (an unset optional) and no rule pass."""
    if rule is not None and value is not None and not rule(value):
        raise refusal(where, key, value, rule.expected)


def check_value(value: Any, tp: Any, rule: Optional[Rule], where: str, key: str, *, coerce: bool = False) -> Any:
    """``value`` after checking its type against ``tp``, then its range against ``rule``.

    ``coerce`` also reads the forms YAML gives (numbers and true/false written as text, whole floats
    for integers, tuples for lists) and returns the converted value."""
    try:
        fitted = _conform(value, tp, coerce)
    except _NoFit:
        raise refusal(where, key, value, describe(tp), WRONG_TYPE) from None
    check_range(fitted, rule, where, key)
    return fitted


def check_fields(values: Mapping[str, Any], annotations: Mapping[str, Any], rules: Mapping[str, Rule], where: str,
                 *, prefix: str = "", coerce: bool = False) -> dict[str, Any]:
    """A copy of ``values`` whose keys named in ``annotations`` are checked: every type first, then
    the ``rules`` in their order. Keys are named ``prefix`` + key in errors; keys ``annotations``
    does not name pass through unchecked (refuse them first with :func:`reject_unknown` if need be)."""
    fitted = dict(values)
    for key, value in values.items():
        if key in annotations:
            fitted[key] = check_value(value, annotations[key], None, where, f"{prefix}{key}", coerce=coerce)
    for key, rule in rules.items():
        if key in fitted:
            check_range(fitted[key], rule, where, f"{prefix}{key}")
    return fitted
