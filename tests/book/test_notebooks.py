"""The book's notebook runner: reading order, a clear error for a notebook that does not exist, the run log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remap_lib.book import notebooks


def test_list_notebooks_in_reading_order():
    names = notebooks.list_notebooks()
    # later notebooks (09_...) may follow; these eight come first, in this order
    assert names[:8] == ["01_data_prep", "02_pretrain", "03_finetune", "04_calibrate", "05_validate", "06_giants",
                         "07_ablations", "08_results"]
    assert names == sorted(names)
    assert all((notebooks.NOTEBOOK_DIR / f"{n}.ipynb").exists() for n in names)


def test_run_notebook_unknown_name_lists_the_available_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"99_missing\.ipynb: no such notebook; available: 01_data_prep, "
                                                r"02_pretrain, .*08_results"):
        notebooks.run_notebook("99_missing", "smoke", out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing is created for a notebook that cannot run


def test_run_all_stops_at_the_first_unknown_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        notebooks.run_all("smoke", tmp_path, names=["nope", "01_data_prep"], progress=False)
    assert not list(tmp_path.iterdir())


def test_run_all_logs_wall_time_profile_and_overrides_per_notebook(tmp_path, monkeypatch):
    def fake_run(name, profile, overrides, out_dir, progress):
        path = tmp_path / f"{name}.ipynb"
        path.write_text("{}")
        return path

    monkeypatch.setattr(notebooks, "run_notebook", fake_run)
    notebooks.run_all("smoke", tmp_path, names=["01_a", "02_b"], overrides={"seed": 3}, progress=False)
    log = json.loads((tmp_path / "run_log.json").read_text())
    assert list(log["notebooks"]) == ["01_a", "02_b"]
    entry = log["notebooks"]["02_b"]
    assert entry["profile"] == "smoke" and entry["overrides"] == {"seed": 3}
    assert entry["wall_s"] >= 0 and entry["started"].endswith("Z") and "cpu_count" in entry["machine"]

    # a later run of one notebook replaces its entry and keeps the others
    notebooks.run_all("default", tmp_path, names=["01_a"], progress=False)
    log = notebooks.read_run_log(tmp_path / "run_log.json")
    assert log["notebooks"]["01_a"]["profile"] == "default"
    assert log["notebooks"]["02_b"]["profile"] == "smoke"
    assert not list(tmp_path.glob(".*.part"))


def test_a_failed_notebook_is_not_logged(tmp_path, monkeypatch):
    def failing(name, *args):
        raise RuntimeError("cell failed")

    monkeypatch.setattr(notebooks, "run_notebook", failing)
    with pytest.raises(RuntimeError):
        notebooks.run_all("smoke", tmp_path, names=["01_a"], progress=False)
    assert notebooks.read_run_log(tmp_path / "run_log.json") == {"notebooks": {}}


def test_a_fixed_notebook_clears_its_failed_copy(tmp_path, monkeypatch):
    import papermill

    outcome = {"fail": True}

    def execute(source, output, **kwargs):
        Path(output).write_text("{}")
        if outcome["fail"]:
            raise RuntimeError("cell failed")

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    name = notebooks.list_notebooks()[0]
    with pytest.raises(RuntimeError):
        notebooks.run_notebook(name, out_dir=tmp_path, progress=False)
    assert (tmp_path / f".{name}.failed.ipynb").exists() and not (tmp_path / f"{name}.ipynb").exists()
    outcome["fail"] = False
    assert notebooks.run_notebook(name, out_dir=tmp_path, progress=False) == tmp_path / f"{name}.ipynb"
    assert not (tmp_path / f".{name}.failed.ipynb").exists()  # the book never sees a stale failure


@pytest.mark.parametrize("name", notebooks.list_notebooks())
def test_every_cell_has_a_unique_id(name):
    # nbformat 4.5 requires cell ids; a cell added without one warns today and will fail in a later nbformat
    cells = json.loads((notebooks.NOTEBOOK_DIR / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
    ids = [c.get("id") for c in cells]
    assert None not in ids and len(set(ids)) == len(ids)
