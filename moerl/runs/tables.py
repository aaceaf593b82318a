"""Markdown tables for reports and README results: one writer for every family (and the figure file names).

Why not ``pandas.DataFrame.to_markdown``: it needs the optional ``tabulate`` package and pads cells for
alignment, which makes every regenerated table a noisy diff; reports want plain ``| a | b |`` rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


def slug(text: str) -> str:
    """A file-name stem for a report's figure (lower case, runs of other characters as one ``-``)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def fmt(value: Any, digits: int = 2) -> str:
    """A cell: ``-`` for missing values, floats to ``digits`` places, anything else as text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table with header ``head``; cells are written with :func:`fmt` unless already text."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
