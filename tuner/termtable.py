"""Tables for the terminal: at most 120 columns. The full table is always in trials.csv, so here long
text is cut (with "...") and columns that do not fit are left out, with one line saying which."""

from __future__ import annotations

import pandas as pd

WIDTH = 120
TEXT_MAX = 40  # a stop reason or an error: its first 40 characters; the CSV has all of it


def _cut(value, limit: int):
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 3] + "..."
    return value


def render(table: pd.DataFrame, width: int = WIDTH, text_max: int = TEXT_MAX) -> str:
    """`table` as text no wider than `width`: long strings cut, then the rightmost columns dropped."""
    shown = table.copy()
    for col in shown.columns:
        if shown[col].dtype == object or pd.api.types.is_string_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: _cut(v, text_max))
    dropped: list[str] = []
    with pd.option_context("display.width", 10_000, "display.max_columns", None, "display.max_colwidth", None,
                           "display.float_format", "{:.4g}".format):
        text = shown.to_string(index=False)
        while len(shown.columns) > 1 and max(map(len, text.splitlines() or [""])) > width:
            dropped.insert(0, str(shown.columns[-1]))
            shown = shown.iloc[:, :-1]
            text = shown.to_string(index=False)
    return text + ("\n" + _not_shown(dropped, width) if dropped else "")


def _not_shown(dropped: list[str], width: int) -> str:
    """One line naming the columns left out, as many as fit, then how many more."""
    for n in range(len(dropped), 0, -1):
        more = f" and {len(dropped) - n} more" if n < len(dropped) else ""
        note = f"(not shown: {', '.join(dropped[:n])}{more}; see trials.csv)"
        if len(note) <= width:
            return note
    return f"({len(dropped)} columns not shown; see trials.csv)"
