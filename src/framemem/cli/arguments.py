"""Argument types and the parser class of the `framemem` command: one-line errors, defaults in the help."""
from __future__ import annotations

import argparse
import math

from ..errors import FrameMemError
from ..pipelines.inputs import SEED_LIMIT


def _positive(kind=float):
    """An argparse type: a finite number > 0 (a count, a length, a rate)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        return value
    return parse



def _non_negative_int(text: str) -> int:
    """An argparse type for seeds: integers from 0 below 2**63 (what torch's generators take)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer >= 0")
    if int(text) >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"{text} is too large (seeds go up to 2**63 - 1)")
    return int(text)


def _parse_times(text: str) -> list[float]:
    try:
        times = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise FrameMemError(f"--times '{text}': expected comma-separated seconds, e.g. 1.5,7.0,18.2") from None
    if not times:
        raise FrameMemError("--times: give at least one time in seconds")
    twice = sorted({t for t in times if times.count(t) > 1})
    if twice:
        raise FrameMemError(f"--times: {', '.join(f'{t:g}' for t in twice)} given more than once")
    return times


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, where it has one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".lstrip()


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error of every other bad input (no usage block), and
    defaults in the help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"framemem: error: {message} (see {self.prog} --help)\n")
