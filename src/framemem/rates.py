"""Memory compression rates as people type them (`4x4x2`, or `4x4x2+2x2x8` for several
memory encoders) and as configs hold them ((h, w, t), or a tuple of them)."""
from __future__ import annotations

from .errors import FrameMemError

ALLOWED_RATE_FACTORS = (1, 2, 4, 8)


Rate = tuple[int, int, int]

EMPTY_RATES = "an empty list of memory encoders: give at least one rate, e.g. 4x4x2 or 4x4x2+2x2x8"


def parse_rate(text: str) -> Rate | tuple[Rate, ...]:
    """'4x4x2' -> (h, w, t) = (4, 4, 2); each factor in {1, 2, 4, 8}. Several memory
    encoders are joined by '+': '4x4x2+2x2x8' -> ((4, 4, 2), (2, 2, 8))."""
    if not text.replace("+", "").strip():
        raise FrameMemError(f"rate '{text}': {EMPTY_RATES}")
    rates = tuple(_parse_one_rate(part.strip(), text) for part in text.split("+"))
    return rates[0] if len(rates) == 1 else rates


def _parse_one_rate(part: str, text: str) -> Rate:
    try:
        rate = tuple(int(p) for p in part.lower().replace("×", "x").split("x"))
    except ValueError:
        raise FrameMemError(f"rate '{text}' is not of the form HxWxT, e.g. 4x4x2 (or 4x4x2+2x2x8)") from None
    if len(rate) != 3 or any(r not in ALLOWED_RATE_FACTORS for r in rate):
        raise FrameMemError(f"rate '{text}': need three factors HxWxT, each one of {ALLOWED_RATE_FACTORS}")
    return rate  # type: ignore[return-value]


def rate_list(rate) -> tuple[Rate, ...]:
    """A model's `rate`, one (h, w, t) or several, as a tuple of (h, w, t): one per memory encoder."""
    if len(rate) and isinstance(rate[0], (tuple, list)):
        return tuple(tuple(r) for r in rate)
    return (tuple(rate),) if len(rate) else ()


def format_rate(rate) -> str:
    """(4, 4, 2) -> '4x4x2'; ((4, 4, 2), (2, 2, 8)) -> '4x4x2+2x2x8'."""
    return "+".join("x".join(str(r) for r in one) for one in rate_list(rate))
