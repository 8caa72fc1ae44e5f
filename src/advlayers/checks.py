"""Argument checks shared by the library: each failure is one ValueError naming the argument and what is valid.

`bool` is not accepted where a number is meant (`steps=True`), nor a float where an integer is (`epochs=1.5`),
nor a string where a number is (`eps="8/255"`): each would otherwise run and give a silently different result.
"""

from __future__ import annotations

import math
import numbers


def check_choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(map(str, choices))}")
    return value


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        bounds = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}" if minimum is not None else f"<= {maximum}"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


def check_number(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                 strict: bool = False) -> float:
    """A finite real number (int or float, not bool/str) within [minimum, maximum] (> minimum if `strict`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = " (write a number, e.g. 0.0313725 for 8/255)" if isinstance(value, str) else ""
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__}){hint}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return float(value)
