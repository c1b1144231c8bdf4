"""Table text for the generated pages."""

from remap_lib.book.markdown import LABELS, code_cell, seconds_text, table_cell


def test_table_cell_cannot_break_a_row():
    assert table_cell("a | b\nc") == "a \\| b c"
    assert code_cell("x|y") == "`'x\\|y'`"


def test_seconds_text_switches_to_minutes_at_two():
    assert seconds_text(None) == "—"
    assert seconds_text(119.4) == "119 s"
    assert seconds_text(120.0) == "2.0 min"


def test_labels_give_each_labels_columns():
    assert [name for name, *_ in LABELS] == ["teff", "logg", "feh"]
    assert LABELS[0][2] == "K"
