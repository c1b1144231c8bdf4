"""Text for the Markdown tables of the generated pages: a value or free text that cannot break a row."""

from __future__ import annotations


def table_cell(text) -> str:
    """``text`` for one table cell: pipes escaped, line breaks made spaces."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def code_cell(value) -> str:
    """``value``'s repr as inline code, safe in a table cell."""
    return f"`{value!r}`".replace("|", "\\|")
