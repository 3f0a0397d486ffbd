"""How ferwild writes numbers and errors for people: percentages, p-values, one-line errors.

Reports, verdicts and CLI messages all format through these, so "12.3" means the same thing
(a percentage, one or two decimals) and a missing value reads the same way in each place
that shows one. ``missing`` says what a missing value (None or NaN) becomes: an em dash in
tables (:data:`DASH`), ``"n/a"`` in running text, ``""`` in a Markdown cell that should stay
empty.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["DASH", "is_missing", "pct", "p_value", "p_text", "number", "first_line"]

#: A table cell without a value.
DASH = "—"


def is_missing(value: Any) -> bool:
    """None, NaN, or anything that is not a number."""
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def pct(value: Any, digits: int = 2, missing: str = DASH) -> str:
    """A fraction as a percentage without the sign: ``0.1234 -> "12.34"``."""
    return missing if is_missing(value) else f"{100 * float(value):.{digits}f}"


def p_value(p: Any, missing: str = DASH) -> str:
    """``"0.012"`` or ``"< 0.001"`` (three decimals: what a reader can act on)."""
    if is_missing(p):
        return missing
    return "< 0.001" if float(p) < 0.001 else f"{float(p):.3f}"


def p_text(p: Any, missing: str = f"p {DASH}") -> str:
    """``"p = 0.012"`` or ``"p < 0.001"``, for running text."""
    if is_missing(p):
        return missing
    text = p_value(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def number(value: Any, fmt: str = ".3g", missing: str = DASH) -> str:
    """``format(value, fmt)``, or ``missing``."""
    return missing if is_missing(value) else format(float(value), fmt)


def first_line(error: BaseException | str) -> str:
    """An error as one line: its first non-empty line, prefixed by the type for exceptions
    whose message alone would not say what went wrong."""
    text = str(error).strip()
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {line}" if line else type(error).__name__
    return line
