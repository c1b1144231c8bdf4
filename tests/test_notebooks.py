"""The book's notebook runner: reading order and a clear error for a notebook that does not exist."""

from __future__ import annotations

import pytest

from remap_lib import notebooks


def test_list_notebooks_in_reading_order():
    names = notebooks.list_notebooks()
    assert names == ["01_data_prep", "02_pretrain", "03_finetune", "04_calibrate", "05_validate", "06_giants",
                     "07_ablations", "08_results"]
    assert all((notebooks.NOTEBOOK_DIR / f"{n}.ipynb").exists() for n in names)


def test_run_notebook_unknown_name_lists_the_available_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"09_missing\.ipynb: no such notebook; available: 01_data_prep, "
                                                r"02_pretrain, .*08_results"):
        notebooks.run_notebook("09_missing", "smoke", out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing is created for a notebook that cannot run


def test_run_all_stops_at_the_first_unknown_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        notebooks.run_all("smoke", tmp_path, names=["nope", "01_data_prep"], progress=False)
    assert not list(tmp_path.iterdir())
