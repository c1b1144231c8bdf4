"""Text for the Markdown tables of the generated pages: a value or free text that cannot break a row."""

from __future__ import annotations

from remap_lib.constants import LABEL_DIGITS, LABEL_HTML, LABEL_NAMES, LABEL_UNITS

#: Each label's columns in a table: (name, HTML label, unit, decimal digits of a σ).
LABELS = tuple((n, LABEL_HTML[n], unit, LABEL_DIGITS[n]) for n, unit in zip(LABEL_NAMES, LABEL_UNITS, strict=True))


def table_cell(text) -> str:
    """``text`` for one table cell: pipes escaped, line breaks made spaces."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def code_cell(value) -> str:
    """``value``'s repr as inline code, safe in a table cell."""
    return f"`{value!r}`".replace("|", "\\|")


def seconds_text(s) -> str:
    """A duration in seconds as text: "95 s", "4.2 min"; "—" for None."""
    if s is None:
        return "—"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"
