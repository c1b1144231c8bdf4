"""The ``remap`` command: help texts, grid verify/build wiring, and clear errors with exit code 2."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from remap_lib import cli
from remap_lib.data.sources import sme_grid


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
    (["finetune", "--help"], ["--pretrained", "--epochs", "--members", "--splits", "--swa-bn-rows"]),
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

    from remap_lib.data.dataset import write_dataset

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


# ---------------------------------------------------------------- the `remap predict` catalogue
# Every way a run can go wrong that is not one spectrum's fault: the message, the exit code, and that
# the good spectra beside the problem are still predicted (in the same run, or once the problem is
# fixed as the message says), with no stray file left behind.
@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    from toymodel import toy_ensemble

    return toy_ensemble(tmp_path_factory.mktemp("model"))


def _spectra(folder, n=3):
    """``n`` good spectra as files users have: two-column text, three-column text, headerless CSV."""
    import numpy as np
    from toydata import toy_set

    folder.mkdir(parents=True, exist_ok=True)
    toy = toy_set(n, seed=4)
    names = []
    for i in range(n):
        columns = [toy.wave, toy.flux[i]] + ([0.01 * toy.flux[i]] if i % 3 == 1 else [])
        name = ("star{}.txt", "star{}.dat", "star{}.csv")[i % 3].format(i)
        np.savetxt(folder / name, np.column_stack(columns), delimiter="," if name.endswith(".csv") else " ")
        names.append(str(folder / name))
    return names


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


class Case:
    """A `remap predict` run with a problem, and the same run once the problem is fixed."""

    def __init__(self, argv, code, words, fixed=None, fixed_code=0, fixed_words=None, undo=None, predicted=None):
        self.argv, self.code, self.words = argv, code, words
        self.fixed, self.fixed_code, self.fixed_words, self.undo = fixed, fixed_code, fixed_words, undo
        self.predicted = predicted  # sources predicted by the first run itself (its exit code is 0 or 3)


def _write_failure(monkeypatch, tmp, where, after=0):
    """OSError(ENOSPC) from the ``after``+1-th checkpoint (``where="checkpoint"``) or the output's writer."""
    import errno

    import numpy as np
    from astropy.table import Table

    calls = []
    real = np.savez if where == "checkpoint" else Table.write

    def full(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(*(np, "savez") if where == "checkpoint" else (Table, "write"), full)
    return lambda: monkeypatch.undo()


def _case_is_input(tmp, model, mp):
    good = _spectra(tmp / "in")
    return Case([*good, "-o", good[2]], 2, f"{good[2]}: is one of the inputs; the results would replace that "
                "spectrum", fixed=[*good, "-o", str(tmp / "labels.ecsv")])


def _case_in_input_dir(tmp, model, mp):
    _spectra(tmp / "in")
    return Case([str(tmp / "in"), "-o", str(tmp / "in" / "labels.ecsv")], 2,
                f"labels.ecsv: is inside the input directory {tmp / 'in'}, so a later run on it would read the "
                "results back as a spectrum", fixed=[str(tmp / "in"), "-o", str(tmp / "labels.ecsv")])


def _case_matches_pattern(tmp, model, mp):
    _spectra(tmp / "in")
    return Case([str(tmp / "in" / "*"), "-o", str(tmp / "in" / "all.csv")], 2,
                f"all.csv: matches the input pattern {tmp / 'in' / '*'}, so a later run would read the results "
                "back", fixed=[str(tmp / "in" / "*"), "-o", str(tmp / "all.csv")])


def _case_exists(tmp, model, mp):
    _spectra(tmp / "in")
    (tmp / "labels.fits").write_text("somebody else's file")
    argv = [str(tmp / "in"), "-o", str(tmp / "labels.fits")]
    return Case(argv, 2, "labels.fits: already exists; pass --overwrite (overwrite=True) to replace it",
                fixed=[*argv, "--overwrite"])


def _case_directory(tmp, model, mp):
    _spectra(tmp / "in")
    (tmp / "out.h5").mkdir()
    return Case([str(tmp / "in"), "-o", str(tmp / "out.h5")], 2, "out.h5: is a directory; the output is a file",
                fixed=[str(tmp / "in"), "-o", str(tmp / "out.hdf5")])


def _case_under_a_file(tmp, model, mp):
    good = _spectra(tmp / "in")
    return Case([str(tmp / "in"), "-o", f"{good[0]}/labels.ecsv"], 2,
                f"{good[0]}/labels.ecsv: {good[0]} is a file, not a directory",
                fixed=[str(tmp / "in"), "-o", str(tmp / "labels.ecsv")])


def _case_locked(tmp, model, mp):
    import os

    from remap_lib.prediction.streaming import OutputLock

    _spectra(tmp / "in")
    lock = OutputLock(tmp / "labels.h5").__enter__()  # another run holds the output
    return Case([str(tmp / "in"), "-o", str(tmp / "labels.h5")], 4,
                f"labels.h5: another remap predict (PID {os.getpid()}) is writing this output; wait for it to "
                "finish", fixed=[str(tmp / "in"), "-o", str(tmp / "labels.h5")], undo=lambda: lock.__exit__())


def _case_permission_denied(tmp, model, mp):
    import errno
    import os

    _spectra(tmp / "in")
    (tmp / "shared").mkdir()  # a folder we may not write in (root ignores chmod, so the system call says no)
    real = os.open

    def refuse(path, flags, *args, **kwargs):
        if str(path).startswith(str(tmp / "shared")) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, flags, *args, **kwargs)

    mp.setattr(os, "open", refuse)
    argv = [str(tmp / "in"), "-o", str(tmp / "shared" / "labels.ecsv")]
    return Case(argv, 4, f"cannot write {tmp / 'shared' / 'labels.ecsv'}: Permission denied (EACCES)",
                fixed=argv, undo=mp.undo)


def _case_disk_full_at_first(tmp, model, mp):
    _spectra(tmp / "in")
    argv = [str(tmp / "in"), "-o", str(tmp / "labels.ecsv"), "--chunk-size", "1"]
    return Case(argv, 4, "No space left on device (ENOSPC); no spectrum was finished, nothing was kept",
                fixed=argv, undo=_write_failure(mp, tmp, "checkpoint"))


def _case_disk_full_midway(tmp, model, mp):
    _spectra(tmp / "in")
    argv = [str(tmp / "in"), "-o", str(tmp / "labels.ecsv"), "--chunk-size", "1"]
    partial = tmp / "labels.ecsv.partial"
    return Case(argv, 4, f"{partial}/chunk_000001_000000-000001.npz: No space left on device (ENOSPC); rerun the "
                f"same command to resume (1 chunk kept: 1 of 3 spectra done); `rm -r {partial}` discards them",
                fixed=argv, fixed_words="(resumed: 1 spectra in 1 chunks kept by an interrupted run)",
                undo=_write_failure(mp, tmp, "checkpoint", after=1))


def _case_disk_full_in_merge(tmp, model, mp):
    _spectra(tmp / "in")
    argv = [str(tmp / "in"), "-o", str(tmp / "labels.ecsv"), "--chunk-size", "2"]
    return Case(argv, 4, f"cannot write {tmp / 'labels.ecsv'}: No space left on device (ENOSPC); rerun the same "
                "command to resume (2 chunks kept: 3 of 3 spectra done)",
                fixed=argv, fixed_words="(resumed: 3 spectra in 2 chunks kept by an interrupted run)",
                undo=_write_failure(mp, tmp, "output"))


def _case_ctrl_c(tmp, model, mp):
    from remap_lib.prediction import streaming
    from remap_lib.prediction.inference import Predictor

    _spectra(tmp / "in")
    mp.setattr(streaming, "SLICE_ROWS", 1)
    real, calls = Predictor.predict_prepared, []

    def ctrl_c_on_the_second_slice(self, prep, pmf=False):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, prep, pmf)

    mp.setattr(Predictor, "predict_prepared", ctrl_c_on_the_second_slice)
    argv = [str(tmp / "in"), "-o", str(tmp / "labels.ecsv"), "--batch-size", "1"]  # default chunk size: 4096
    partial = tmp / "labels.ecsv.partial"
    return Case(argv, 130, f"remap: interrupted: rerun the same command to resume (1 chunk kept: 1 of 3 spectra "
                f"done); `rm -r {partial}` discards them", fixed=argv,
                fixed_words="(resumed: 1 spectra in 1 chunks kept by an interrupted run)", undo=mp.undo)


def _case_unknown_files_in_directory(tmp, model, mp):
    good = _spectra(tmp / "in")
    (tmp / "in" / "observing_log.doc").write_text("clouds")
    (tmp / "in" / "plot.png").write_bytes(b"\x89PNG")
    return Case([str(tmp / "in"), "-o", str(tmp / "labels.ecsv")], 0,
                f"skipped 2 files of unknown type: {tmp / 'in' / 'observing_log.doc'}, {tmp / 'in' / 'plot.png'} "
                "(remap reads .fits", predicted=good)


def _case_bad_text_file(tmp, model, mp):
    good = _spectra(tmp / "in")
    (tmp / "in" / "wide.txt").write_text("5000 1 0.1 7\n5001 1 0.1 7\n")
    return Case([str(tmp / "in"), "-o", str(tmp / "labels.ecsv")], 3,
                f"{tmp / 'in' / 'wide.txt'}: no header and 4 columns: remap reads wavelength (Å), flux and "
                "optionally error by position", predicted=good)


def _case_non_ascii(tmp, model, mp, suffix):
    good = _spectra(tmp / "Stern é α")
    return Case([str(tmp / "Stern é α"), "-o", str(tmp / f"Ergebnis ß{suffix}")], 0, "wrote 3 rows", predicted=good)


def _case_fwhm_zero(tmp, model, mp):
    _spectra(tmp / "in")
    argv = [str(tmp / "in"), "-o", str(tmp / "labels.ecsv")]
    return Case([*argv, "--fwhm", "0"], 2, "fwhm 0 Å is out of range: this model needs 0 < FWHM <= 2.5 Å (the tiny "
                "LSF, FWHM 2.5 Å over 5000-5114 Å)", fixed=[*argv, "--fwhm", "1.5"])


def _case_resolution_negative(tmp, model, mp):
    _spectra(tmp / "in")
    argv = [str(tmp / "in"), "-o", str(tmp / "labels.ecsv")]
    return Case([*argv, "--resolution", "-5"], 2, "resolution -5 is out of range: this model needs R >= 2045.72 "
                "(the tiny LSF, FWHM 2.5 Å over 5000-5114 Å); coarser spectra cannot be sharpened",
                fixed=[*argv, "--resolution", "5000"])


def _case_rv_out_of_range(tmp, model, mp):
    _spectra(tmp / "in")
    argv = [str(tmp / "in"), "-o", str(tmp / "labels.ecsv")]
    return Case([*argv, "--rv", "50000"], 2, "rv 50000 km/s is out of range: |rv| must be at most 3000 km/s (a "
                "radial velocity in km/s, not m/s, not a redshift)", fixed=[*argv, "--rv", "-30"])


def _case_chunk_size_zero(tmp, model, mp):
    _spectra(tmp / "in")
    argv = [str(tmp / "in"), "-o", str(tmp / "labels.ecsv")]
    return Case([*argv, "--chunk-size", "0"], 2, "argument --chunk-size: must be at least 1, got 0", fixed=argv)


def _case_device(tmp, model, mp):
    import torch

    _spectra(tmp / "in")
    argv = [str(tmp / "in"), "-o", str(tmp / "labels.ecsv")]
    if torch.cuda.is_available():
        return Case([*argv, "--device", "cuda:99"], 2, "device 'cuda:99': this machine has", fixed=argv)
    return Case([*argv, "--device", "cuda"], 2, "device 'cuda': CUDA is not available here", fixed=argv)


def _case_device_unknown(tmp, model, mp):
    _spectra(tmp / "in")
    argv = [str(tmp / "in"), "-o", str(tmp / "labels.ecsv")]
    return Case([*argv, "--device", "gpu"], 2, "device 'gpu' is not one torch knows: use cpu, cuda", fixed=argv)


PREDICT_CATALOGUE = {
    "output is one of the inputs": _case_is_input,
    "output inside an input directory": _case_in_input_dir,
    "output matches an input pattern": _case_matches_pattern,
    "output exists (not ours)": _case_exists,
    "output is a directory": _case_directory,
    "output under a file": _case_under_a_file,
    "another run holds the output": _case_locked,
    "permission denied": _case_permission_denied,
    "disk full before anything was kept": _case_disk_full_at_first,
    "disk full half-way": _case_disk_full_midway,
    "disk full writing the output": _case_disk_full_in_merge,
    "Ctrl-C with the default chunk size": _case_ctrl_c,
    "files of unknown type in a directory": _case_unknown_files_in_directory,
    "text file with 4 unnamed columns": _case_bad_text_file,
    **{f"non-ASCII paths, {s} output": (lambda tmp, model, mp, s=s: _case_non_ascii(tmp, model, mp, s))
       for s in (".fits", ".ecsv", ".csv", ".h5")},
    "--fwhm 0": _case_fwhm_zero,
    "--resolution -5": _case_resolution_negative,
    "--rv 50000": _case_rv_out_of_range,
    "--chunk-size 0": _case_chunk_size_zero,
    "--device without CUDA (or beyond the GPUs there are)": _case_device,
    "--device gpu": _case_device_unknown,
}


@pytest.mark.parametrize("name", list(PREDICT_CATALOGUE))
def test_predict_catalogue(name, toy_model, tmp_path, monkeypatch, capsys):
    import numpy as np

    from remap_lib.prediction.tables import read_predictions

    case = PREDICT_CATALOGUE[name](tmp_path, toy_model, monkeypatch)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, out, err = run(["predict", *case.argv, "--model", str(toy_model), "--quiet"], capsys)
    assert code == case.code, (out, err)
    assert case.words in out + err, (out, err)
    assert "Traceback" not in err
    new = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p not in before)
    output = Path(case.argv[case.argv.index("-o") + 1])
    if code in (0, 3):
        assert new == [output], _tree(tmp_path)
    else:  # nothing but finished work, and the message says how to resume or discard it
        assert new == [p for p in new if p.parent.name.endswith(".partial")], _tree(tmp_path)
        assert not new or "rerun the same command to resume" in err and "rm -r" in err
    assert all(before[p] == p.read_bytes() for p in before), "an existing file was changed"
    if case.predicted is not None:
        table = read_predictions(output)
        good = np.isin(np.asarray(table["source"]), case.predicted)
        assert good.sum() == len(case.predicted)
        assert np.all(np.isfinite(np.asarray(table["teff_median"])[good])) and set(table["error"][good]) == {""}
    if case.fixed is None:
        return
    if case.undo:
        case.undo()
    code, out, err = run(["predict", *case.fixed, "--model", str(toy_model), "--quiet"], capsys)
    assert code == case.fixed_code, (out, err)
    assert case.fixed_words is None or case.fixed_words in out, out
    target = Path(case.fixed[case.fixed.index("-o") + 1])
    table = read_predictions(target)
    assert len(table) == 3 and set(table["error"]) == {""} and np.all(np.isfinite(np.asarray(table["teff_median"])))
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith((".partial", ".part", ".lock", ".discarded"))]
    assert not leftovers, leftovers


def test_predict_rv_shifts_every_input_to_the_rest_frame(toy_model, tmp_path, capsys):
    """Spectra observed at +300 km/s, predicted with --rv 300, give the rest-frame spectra's numbers."""
    import numpy as np
    from toydata import toy_set

    from remap_lib import predict
    from remap_lib.prediction.tables import read_predictions
    from remap_lib.spectra.instruments import C_KMS

    toy = toy_set(2, seed=5)
    (tmp_path / "in").mkdir()
    for i in range(2):
        np.savetxt(tmp_path / "in" / f"star{i}.txt", np.column_stack([toy.wave * (1 + 300 / C_KMS), toy.flux[i]]))
    code, out, err = run(["predict", str(tmp_path / "in"), "-o", str(tmp_path / "rv.ecsv"), "--rv", "300",
                          "--model", str(toy_model), "--quiet"], capsys)
    assert code == 0, (out, err)
    table = read_predictions(tmp_path / "rv.ecsv")
    rest = predict([(toy.wave, toy.flux[i]) for i in range(2)], model=toy_model)
    np.testing.assert_allclose(np.asarray(table["teff_median"]), np.asarray(rest["teff_median"]), rtol=1e-4)
    assert all("shifted to rest frame (rv = 300 km/s)" in n for n in table["notes"])
    assert set(table["flags"]) == set(rest["flags"])  # the window is covered once shifted back
