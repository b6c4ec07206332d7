"""Command-line option types: every number is checked where it is parsed, with one-line errors.

``argparse`` calls these with the option's text; a ``ValueError``/``ArgumentTypeError`` becomes
``flow3d: error: argument --steps: ...`` (one line, exit 2: see :class:`OneLineParser`).
Settings dataclasses reuse :func:`check_int` and :func:`check_float` so a value that arrives from
Python rather than from the command line gets the same message.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from flow3d.errors import ConfigError


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr and exit status 2.

    Subparsers inherit the class (``add_subparsers`` uses ``type(self)``), so this holds for
    every ``flow3d`` sub-command.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        first = message.strip().splitlines()[0] if message.strip() else "invalid arguments"
        sys.stderr.write(f"flow3d: error: {first} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def check_int(value: object, name: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int within [lo, hi], else a :class:`ConfigError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{name} = {value!r}: expected a whole number")
    if lo is not None and value < lo:
        raise ConfigError(f"{name} = {value}: must be at least {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name} = {value}: must be at most {hi}")
    return value


def check_float(value: object, name: str, *, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False) -> float:
    """``value`` as a finite float within [lo, hi] (``(lo, hi]`` with ``lo_open``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} = {value!r}: expected a number")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} = {value}: must be a finite number")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(f"{name} = {value:g}: must be {'above' if lo_open else 'at least'} "
                          f"{lo:g}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name} = {value:g}: must be at most {hi:g}")
    return value


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """argparse ``type=``: a whole number in [lo, hi] (``1e3`` is accepted when whole)."""

    def parse(text: str) -> int:
        try:
            number = float(text) if any(c in text.lower() for c in ".e") else int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        try:
            return check_int(number, "value", lo=lo, hi=hi)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e).replace("value = ", "", 1)) from None

    parse.__name__ = "whole number"
    return parse


def float_range(lo: float | None = None, hi: float | None = None,
                lo_open: bool = False) -> Callable[[str], float]:
    """argparse ``type=``: a finite number in [lo, hi] (``(lo, hi]`` with ``lo_open``)."""

    def parse(text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        try:
            return check_float(number, "value", lo=lo, hi=hi, lo_open=lo_open)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e).replace("value = ", "", 1)) from None

    parse.__name__ = "number"
    return parse


def add_overwrite_flag(parser: argparse.ArgumentParser, resumable: bool = False) -> None:
    """The output rule's flags (see :mod:`flow3d.io`): ``--overwrite`` and maybe ``--resume``."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output (a folder is emptied first)")
    if resumable:
        parser.add_argument("--resume", action="store_true",
                            help="continue an interrupted run in the same output folder "
                                 "(same seed and settings); finished outputs are kept")
