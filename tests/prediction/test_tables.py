"""The output tables on their own: parts written as one file, read back with units, text and metadata."""

import numpy as np
import pytest

from remap_lib.prediction.tables import MAX_LISTED, output_format, read_predictions, write_predictions


def _part(sources, errors, teff):
    return {"source": np.array(sources), "error": np.array(errors), "teff_median": np.array(teff, dtype=np.float64),
            "flags": np.array([""] * len(sources))}


@pytest.mark.parametrize("suffix", [".h5", ".ecsv", ".fits", ".csv"])
def test_parts_become_one_table_with_longer_text_in_a_later_part(suffix, tmp_path):
    out = tmp_path / f"p{suffix}"
    parts = [_part(["a.fits", "b.fits"], ["", "bad flux"], [5000.0, np.nan]),
             _part(["ç" * 40 + ".fits"], [""], [6100.5])]  # wider, non-ASCII text: the .h5 dataset regrows
    n_rows, n_failed, first = write_predictions(out, output_format(out), iter(parts), {"model": "m.pt"})
    assert (n_rows, n_failed, first) == (3, 1, [("b.fits", "bad flux")])
    table = read_predictions(out)
    assert list(table["source"]) == ["a.fits", "b.fits", "ç" * 40 + ".fits"]
    assert list(table["error"]) == ["", "bad flux", ""] and list(table["flags"]) == ["", "", ""]
    assert table["teff_median"][2] == 6100.5 and str(table["teff_median"].unit) == "K"
    if suffix != ".csv":  # CSV keeps no metadata
        assert table.meta["model"] == "m.pt"
    assert not [p for p in tmp_path.iterdir() if p.name != out.name]  # no temporary left beside it


def test_failures_listed_stop_at_max_listed(tmp_path):
    many = _part([f"s{i}" for i in range(MAX_LISTED + 5)], ["x"] * (MAX_LISTED + 5), [1.0] * (MAX_LISTED + 5))
    _, n_failed, first = write_predictions(tmp_path / "p.h5", "hdf5", [many], {})
    assert n_failed == MAX_LISTED + 5 and len(first) == MAX_LISTED


def test_unknown_suffix_is_refused():
    with pytest.raises(ValueError, match="output must end in .ecsv"):
        output_format("out.parquet")


def test_read_predictions_is_public():
    import remap_lib
    from remap_lib.prediction import tables

    assert "read_predictions" in remap_lib.__all__ and remap_lib.read_predictions is tables.read_predictions
