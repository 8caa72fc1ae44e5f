"""Argument types and the one-line-error parser of the `advlayers` command (`advlayers.tools.cli`)."""

from __future__ import annotations

import argparse
import ast
from fractions import Fraction


class UsageError(Exception):
    """A bad command line: reported as one line, status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage and exit; one line, raised to `main` instead
        raise UsageError(f"{message} (see {self.prog} --help)")


# --------------------------------------------------------------------------- argument types


def fraction(text: str) -> float:
    """A number written as a decimal or a fraction ('8/255', '0.03', '1e-2'); parsed, never evaluated."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction such as 8/255, got {text!r}") from None


def override(text: str) -> tuple[str, object]:
    """FIELD=VALUE, the value a Python literal (epochs=1, precision='fp32', milestones=(30,60)) or else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_non_negative_int = _int_at_least(0, "non-negative")


def _width(text: str) -> float:
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a width multiplier such as 1 or 0.25, got {text!r}") from None
    return value


def _fmt_fraction(value: float) -> str:
    """8/255 for 0.0313725..., else the number."""
    f = Fraction(value).limit_denominator(1000)
    if f.denominator in (1, 255) and abs(float(f) - value) < 1e-12:
        return f"{f.numerator}/{f.denominator}" if f.denominator != 1 else str(f.numerator)
    return f"{value:g}"


def _device(text: str | None) -> str:
    """A usable torch device name (default: cuda if available, else cpu); a bad one is a ValueError."""
    import torch

    if text is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"--device {text!r} is not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"--device {text}: no such CUDA device here ({torch.cuda.device_count()} visible)")
    return text
