"""The ``remap`` command: help texts, grid verify/build wiring, and clear errors with exit code 2."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from remap_lib import cli
from remap_lib.sources import sme_grid


def run(argv, capsys):
    """``main(argv)`` as the console script sees it: (exit code, stdout, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv, words", [
    (["--help"], ["fetch", "grid", "prepare", "train", "book"]),
    (["grid", "build", "--help"], ["--workers", "--limit", "--output", "--workdir"]),
    (["prepare", "--help"], ["--instrument", "--max-grid-spectra", "--max-miles-stars", "--out"]),
    (["book", "run", "--help"], ["--profile", "--param"]),
])
def test_help_exits_zero(argv, words, capsys):
    code, out, _ = run(argv, capsys)
    assert code == 0
    assert all(w in out for w in words), out


def test_train_help_is_the_trainers(capsys):
    code, out, _ = run(["train", "--help"], capsys)
    assert code == 0
    assert "usage: remap train" in out and "--data" in out and "--stage-channels" in out
    code, out, _ = run(["train", "--", "--help"], capsys)  # the form the top-level help suggests
    assert code == 0 and "--data" in out


def test_no_command_is_a_usage_error(capsys):
    code, _, err = run([], capsys)
    assert code == 2 and "usage: remap" in err


def _manifest(tmp_path):
    data = tmp_path / "grid.h5"
    data.write_bytes(b"not really a grid")
    manifest = tmp_path / "MANIFEST.sha256"
    manifest.write_text(f"{hashlib.sha256(data.read_bytes()).hexdigest()}  grid.h5\n")
    return data, manifest


def test_grid_verify(tmp_path, monkeypatch, capsys):
    data, manifest = _manifest(tmp_path)
    monkeypatch.setattr(sme_grid, "MANIFEST", manifest)
    code, out, _ = run(["grid", "verify"], capsys)
    assert code == 0 and "all files match" in out
    data.write_bytes(b"tampered")
    code, _, err = run(["grid", "verify"], capsys)
    assert code == 2
    assert err.startswith("remap: error:") and "grid.h5" in err and "differs from MANIFEST.sha256" in err
    data.unlink()
    code, _, err = run(["grid", "verify"], capsys)
    assert code == 2 and "missing" in err


def test_grid_build_passes_options_and_reports_incomplete(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_build(output, workdir, workers, limit, progress):
        calls.append(dict(output=output, workdir=workdir, workers=workers, limit=limit, progress=progress))
        return None if limit else Path(output)

    monkeypatch.setattr(sme_grid, "build_grid", fake_build)
    out_file, work = tmp_path / "g.h5", tmp_path / "work"
    code, out, _ = run(["grid", "build", "--output", str(out_file), "--workdir", str(work), "--workers", "1",
                        "--limit", "2", "--quiet"], capsys)
    assert code == 3 and "grid incomplete" in out
    assert calls[-1] == dict(output=str(out_file), workdir=str(work), workers=1, limit=2, progress=False)
    code, out, _ = run(["grid", "build", "--output", str(out_file), "--workdir", str(work)], capsys)
    assert code == 0 and f"grid complete: {out_file}" in out
    assert calls[-1]["progress"] is True and calls[-1]["workers"] is None


def test_book_run_unknown_notebook_is_a_clear_error(tmp_path, capsys):
    code, out, err = run(["book", "run", "99_nothing", "--profile", "smoke", "--out", str(tmp_path), "--quiet"],
                         capsys)
    assert code == 2
    assert "99_nothing.ipynb: no such notebook" in err and "01_data_prep" in err
    assert "executed" not in out and not list(tmp_path.iterdir())


def test_book_run_rejects_unknown_profile(capsys):
    code, _, err = run(["book", "run", "01_data_prep", "--profile", "huge"], capsys)
    assert code == 2 and "invalid choice: 'huge'" in err


def test_prepare_missing_grid_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REMAP_GRID", str(tmp_path / "absent.h5"))
    code, _, err = run(["prepare", "--profile", "smoke", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "absent.h5: synthetic grid not found" in err


# ---------------------------------------------------------------- predict and the pipeline steps
@pytest.mark.parametrize("argv, words", [
    (["predict", "--help"], ["--model", "--output", "--pmf", "--batch-size", "--workers", "--chunk-size",
                             "exit codes", "torchrun"]),
    (["finetune", "--help"], ["--pretrained", "--epochs", "--members", "--splits"]),
    (["calibrate", "--help"], ["--members", "--miles"]),
    (["validate", "--help"], ["--json", "--members"]),
    (["export", "--help"], ["--output", "--synthetic"]),
])
def test_new_commands_have_help(argv, words, capsys):
    code, out, _ = run(argv, capsys)
    assert code == 0
    assert all(w in out for w in words), out


@pytest.fixture()
def toy_model_and_store(tmp_path):
    from toydata import toy_set
    from toymodel import toy_ensemble

    from remap_lib.dataset import write_dataset

    store = write_dataset(tmp_path / "s.h5", toy_set(5))
    return toy_ensemble(tmp_path), store


def test_predict_exit_codes(toy_model_and_store, tmp_path, capsys):
    model, store = toy_model_and_store
    code, out, _ = run(["predict", str(store), "-o", str(tmp_path / "a.ecsv"), "--model", str(model), "--quiet"],
                       capsys)
    assert code == 0 and "wrote 5 rows" in out and "0 failed" in out
    empty = tmp_path / "e.fits"
    empty.write_bytes(b"")
    code, out, err = run(["predict", str(store), str(empty), "-o", str(tmp_path / "b.ecsv"), "--model", str(model),
                          "--quiet"], capsys)
    assert code == 3 and "1 failed" in out and "file is empty" in err
    code, _, err = run(["predict", str(tmp_path / "missing.fits"), "-o", str(tmp_path / "c.ecsv"), "--model",
                        str(model)], capsys)
    assert code == 2 and "no such file" in err and not (tmp_path / "c.ecsv").exists()
    not_model = tmp_path / "x.pt"
    not_model.write_text("not a model")
    code, _, err = run(["predict", str(store), "-o", str(tmp_path / "d.ecsv"), "--model", str(not_model)], capsys)
    assert code == 2 and "not a remap model file" in err and str(not_model) in err
