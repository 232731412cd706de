"""Lenient number parsing for judge scores: 85, 85.0, "85.5", "85/100", " 85 "; strict about range."""

from __future__ import annotations

import math
import re

_FRACTION = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")
_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*%?\s*$")


def parse_score(value: object, lo: float = 0, hi: float = 100) -> float:
    """A score in [lo, hi]. "a/b" is read as a score out of b and rescaled to hi when b != hi.

    Raises ValueError with the reason for garbage, NaN, booleans or out-of-range values.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"score {value!r} is not a number")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        number = _parse_text(value, hi)
    else:
        raise ValueError(f"score {value!r} is a {type(value).__name__}, not a number")
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"score {value!r} is not a finite number")
    if not lo <= number <= hi:
        raise ValueError(f"score {value!r} is outside the range {lo:g}..{hi:g}")
    return number


def _parse_text(text: str, hi: float) -> float:
    fraction = _FRACTION.match(text)
    if fraction:
        numerator, denominator = float(fraction.group(1)), float(fraction.group(2))
        if denominator <= 0:
            raise ValueError(f"score {text!r} has a zero denominator")
        if numerator > denominator:
            raise ValueError(f"score {text!r} is more than its maximum {denominator:g}")
        return numerator if denominator == hi else numerator / denominator * hi
    number = _NUMBER.match(text)
    if not number:
        raise ValueError(f"score {text!r} is not a number")
    return float(number.group(1))
