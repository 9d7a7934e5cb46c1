"""The cells of the HTML report: numbers, percentages, intervals, tables and embedded figures (the page's own
helpers, shared by each study's report section)."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

__all__ = ["ci", "escape", "figure", "num", "p_value", "pct", "table"]


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def num(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def table(header: list[str], rows: list[list[Any]], numeric_from: int = 1, numeric_to: int | None = None) -> str:
    """Cells are trusted HTML (escape dataset text before); columns numeric_from..numeric_to align right."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    last = len(header) if numeric_to is None else numeric_to

    def cell(i: int, c: Any) -> str:
        return f"<td class='num'>{c}</td>" if numeric_from <= i < last else f"<td>{c}</td>"

    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(path: Path, caption: str, wide: bool = False) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f"<figure{' class=wide' if wide else ''}><img alt='{escape(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def p_value(value: float | None) -> str:
    """A p-value, or a dash where none was computed (summaries written before corrections were added)."""
    return "–" if value is None or value != value else f"{value:.3g}"


def ci(summary: dict) -> str:
    return f"{summary['mean']:.4f} [{summary['ci_low']:.4f}, {summary['ci_high']:.4f}]"
