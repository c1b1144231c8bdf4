"""remap_lib.prediction.streaming: chunked, resumable, all-or-nothing output; torchrun shards; output formats."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from toydata import toy_set
from toymodel import toy_ensemble

from remap_lib.data.dataset import write_dataset
from remap_lib.prediction.streaming import (
    PARTIAL_SUFFIX,
    OutputError,
    OutputLock,
    OutputRefused,
    PredictInterrupted,
    plan_chunks,
    predict_files,
)
from remap_lib.prediction.tables import read_predictions

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return toy_ensemble(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "store.h5"
    write_dataset(path, toy_set(50, seed=3))
    return path


def test_plan_chunks_keeps_order_and_size(store, tmp_path):
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  =")
    chunks, failed = plan_chunks([store, bad, store], chunk_size=20)
    sizes = [sum(1 if u.stop < 0 else u.stop - u.start for u in c) for c in chunks]
    # each file is cut in pieces of at most 20; pieces are packed in order without splitting them again
    assert sizes == [20, 20, 11, 20, 20, 10] and sum(sizes) == 101
    assert list(failed) == [1] and "not a readable FITS file" in failed[1]
    units = [u for c in chunks for u in c]
    assert [(u.file, u.start) for u in units[:4]] == [(0, 0), (0, 20), (0, 40), (1, 0)]


@pytest.mark.parametrize("suffix", [".h5", ".ecsv", ".fits", ".csv"])
def test_output_formats_round_trip(suffix, model_file, store, tmp_path):
    out = tmp_path / f"pred{suffix}"
    summary = predict_files([store], out, model_file, chunk_size=16, progress=False)
    assert summary.n_rows == 50 and summary.n_failed == 0 and summary.n_chunks == 4
    table = read_predictions(out)
    assert len(table) == 50
    assert table["source"][7] == f"{store}[7]" and table["name"][7] == "s7"
    assert list(table["error"]) == [""] * 50
    if suffix != ".csv":
        assert str(table["teff_median"].unit) == "K"
    assert not out.with_name(out.name + PARTIAL_SUFFIX).exists()


def test_pmf_columns_and_csv_refusal(model_file, store, tmp_path):
    predict_files([store], tmp_path / "p.h5", model_file, chunk_size=16, pmf=True, progress=False)
    table = read_predictions(tmp_path / "p.h5")
    assert table["teff_pmf"].shape == (50, 68)
    np.testing.assert_allclose(table["feh_pmf"].sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="CSV has no array columns"):
        predict_files([store], tmp_path / "p.csv", model_file, pmf=True, progress=False)


def test_streamed_equals_in_memory(model_file, store, tmp_path):
    from remap_lib import Predictor

    predict_files([store], tmp_path / "s.h5", model_file, chunk_size=7, workers=2, progress=False)
    streamed = read_predictions(tmp_path / "s.h5")
    whole = Predictor(model_file).predict(str(store))
    np.testing.assert_allclose(streamed["logg_p84"], whole["logg_p84"], rtol=1e-6)


def test_resume_reuses_finished_chunks(model_file, store, tmp_path):
    out = tmp_path / "r.ecsv"
    first = predict_files([store], tmp_path / "ref.ecsv", model_file, chunk_size=10, progress=False)
    _partial_of_run([store], model_file, out, keep=3)  # an interrupted run that finished chunks 0-2
    summary = predict_files([store], out, model_file, chunk_size=10, progress=False)
    assert summary.chunks_reused == 3
    assert first.n_rows == summary.n_rows == 50
    np.testing.assert_array_equal(read_predictions(out)["teff_median"], read_predictions(tmp_path / "ref.ecsv")
                                  ["teff_median"])


def _partial_of_run(inputs, model_file, out, keep, **options):
    """A partial folder as a killed run leaves it: the manifest and the first ``keep`` checkpoints."""
    from remap_lib.prediction import streaming

    saved = streaming._merge
    streaming._merge = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())
    try:
        with pytest.raises(KeyboardInterrupt):
            predict_files(inputs, out, model_file, progress=False, **{"chunk_size": 10, **options})
    finally:
        streaming._merge = saved
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    for chunk in sorted(partial.glob("chunk_*.npz"))[keep:]:
        chunk.unlink()
    assert not out.exists()
    return partial


def test_changed_options_start_afresh(model_file, store, tmp_path, capsys):
    out = tmp_path / "c.ecsv"
    _partial_of_run([store], model_file, out, keep=2)
    summary = predict_files([store], out, model_file, chunk_size=10, pmf=True, progress=True)
    assert summary.chunks_reused == 0
    assert "starting afresh" in capsys.readouterr().out


def _predict_cmd(inputs, out, model_file, *extra):
    return [sys.executable, "-m", "remap_lib.cli", "predict", str(inputs), "-o", str(out), "--model",
            str(model_file), "--chunk-size", "20", "--workers", "1", "--quiet", "--threads", "1", *extra]


def _holds_lock(out, proc, timeout=120):
    """Wait until ``proc`` holds the lock on ``out`` (its model loaded, its output checked)."""
    lock = out.with_name(f".{out.name}.lock")
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if lock.read_text().strip() == str(proc.pid):
                return
        time.sleep(0.01)
    raise AssertionError(f"{proc.args}: never took the lock (exit code {proc.poll()})")


def _sources(path):
    return list(read_predictions(path)["source"])


@pytest.fixture(scope="module")
def big_stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    return (write_dataset(folder / "a.h5", toy_set(2000, seed=5, n_val=0)),
            write_dataset(folder / "b.h5", toy_set(600, seed=6, n_val=0, id_prefix="b")))


@pytest.mark.slow
def test_sigkill_at_random_points_never_corrupts_and_rerun_completes(model_file, big_stores, tmp_path):
    """SIGKILL `remap predict` at random moments of its work, again and again; then let it finish.

    After every kill the output is absent or complete; the run that finishes resumes from what the
    killed ones kept and writes exactly the rows of one uninterrupted run, leaving nothing else behind.
    """
    seed = int(os.environ.get("REMAP_KILL_SEED", "1515"))
    rng = np.random.default_rng(seed)
    store = big_stores[0]
    reference = predict_files([store], tmp_path / "reference.h5", model_file, chunk_size=20, progress=False)
    expected = read_predictions(tmp_path / "reference.h5")
    (tmp_path / "reference.h5").unlink()
    out = tmp_path / "k.h5"
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    kept = []
    for _ in range(4):
        proc = subprocess.Popen(_predict_cmd(store, out, model_file), cwd=ROOT, stdout=subprocess.PIPE, text=True)
        _holds_lock(out, proc)
        time.sleep(rng.uniform(0.0, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        if out.exists():  # killed after the merge: the output is whole
            assert _sources(out) == list(expected["source"]), f"seed {seed}"
        kept.append(len(list(partial.glob("chunk_*.npz"))))
    print(f"seed {seed}: checkpoints left by each kill: {kept} of {reference.n_chunks}")
    assert any(0 < k < reference.n_chunks for k in kept), f"seed {seed}: no kill landed mid-run ({kept})"
    rerun = subprocess.run(_predict_cmd(store, out, model_file), cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    if kept[-1] and not out.exists():
        assert "kept by an interrupted run" in rerun.stdout
    table = read_predictions(out)
    assert list(table["source"]) == list(expected["source"]), f"seed {seed}"
    np.testing.assert_array_equal(table["teff_median"], expected["teff_median"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.h5"]  # no checkpoint, lock or temporary file


@pytest.mark.slow
def test_two_runs_on_one_output_cannot_corrupt_it(model_file, big_stores, tmp_path):
    """Real processes writing the same output: refused with the holder's PID, never mixed or reused."""
    a, b = big_stores
    rows_a, rows_b = [f"{a}[{i}]" for i in range(2000)], [f"{b}[{i}]" for i in range(600)]
    out = tmp_path / "shared.h5"
    # 1. A holds the output (stopped, so it surely still holds it when B arrives): B is refused.
    first = subprocess.Popen(_predict_cmd(a, out, model_file), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    _holds_lock(out, first)
    first.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.run(_predict_cmd(b, out, model_file), cwd=ROOT, capture_output=True, text=True)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 4, second.stderr
    assert f"another remap predict (PID {first.pid}) is writing this output" in second.stderr
    assert first.wait(timeout=300) == 0
    assert _sources(out) == rows_a
    # 2. Both at once: one waits for nothing and is refused, or they run one after the other; never mixed.
    procs = [subprocess.Popen(_predict_cmd(x, out, model_file, "--overwrite"), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for x in (a, b)]
    results = [(p.pid, *p.communicate(timeout=300), p.returncode) for p in procs]
    assert {code for *_, code in results} <= {0, 4} and 0 in {code for *_, code in results}, results
    for pid, _, err, code in results:
        if code == 4:
            other = next(q for q, *_ in results if q != pid)
            assert f"another remap predict (PID {other})" in err
    assert _sources(out) in (rows_a, rows_b)
    # 3. A killed run on A's inputs, then a run on B's: A's checkpoints are never taken for B's.
    killed = subprocess.Popen(_predict_cmd(a, out, model_file, "--overwrite"), cwd=ROOT, stdout=subprocess.PIPE)
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(partial.glob("chunk_*.npz"))) < 3:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert len(list(partial.glob("chunk_*.npz"))) >= 3
    after = subprocess.run(_predict_cmd(b, out, model_file, "--overwrite"), cwd=ROOT, capture_output=True,
                           text=True)
    assert after.returncode == 0, after.stderr
    assert "interrupted run" not in after.stdout
    assert _sources(out) == rows_b
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.h5"]


def test_non_ascii_paths_under_an_ascii_locale(model_file, tmp_path):
    """Python in the C locale without UTF-8 mode: file names arrive as surrogates, stdout is ASCII."""
    folder = tmp_path / "Sterne é α"
    folder.mkdir()
    store = write_dataset(folder / "ß.h5", toy_set(3, seed=2))
    (folder / "leer ü.fits").write_bytes(b"")
    out = tmp_path / "Ergebnis ñ.csv"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "remap_lib.cli", "predict", str(folder), "-o", str(out), "--model",
                          str(model_file), "--quiet"], cwd=ROOT, capture_output=True, env=env, timeout=300)
    assert run.returncode == 3, run.stderr.decode()
    assert b"wrote 4 rows to " in run.stdout and b"Ergebnis \\udcc3\\udcb1.csv; 1 failed" in run.stdout  # escaped
    assert b"leer \\xfc.fits: file is empty (0 bytes)" in run.stderr
    sources = list(read_predictions(out)["source"])
    assert sources == [str(folder / "leer ü.fits")] + [f"{store}[{i}]" for i in range(3)]


@pytest.mark.slow
def test_torchrun_shards_and_merges(model_file, store, tmp_path):
    """Two ranks under torchrun each take half the chunks; rank 0 merges; rows match one process."""
    out = tmp_path / "ddp.h5"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "remap_lib.cli", "predict", str(store), "-o", str(out), "--model", str(model_file), "--chunk-size", "8",
           "--device", "cpu", "--quiet"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote 50 rows") == 1  # only rank 0 reports
    predict_files([store], tmp_path / "one.h5", model_file, chunk_size=8, progress=False)
    a, b = read_predictions(out), read_predictions(tmp_path / "one.h5")
    assert list(a["source"]) == list(b["source"])
    np.testing.assert_allclose(a["teff_median"], b["teff_median"], rtol=1e-6)


def test_bad_files_become_rows(model_file, store, tmp_path):
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    summary = predict_files([store, empty], tmp_path / "b.ecsv", model_file, progress=False)
    assert summary.n_rows == 51 and summary.n_failed == 1
    table = read_predictions(tmp_path / "b.ecsv")
    assert table["error"][50] == "file is empty (0 bytes)" and table["source"][50] == str(empty)


def test_missing_input_is_an_error_before_anything_is_written(model_file, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        predict_files([tmp_path / "nope.fits"], tmp_path / "x.ecsv", model_file, progress=False)
    assert not (tmp_path / "x.ecsv").exists()
    with pytest.raises(ValueError, match="output must end in"):
        predict_files([tmp_path], tmp_path / "x.txt", model_file, progress=False)


def test_table_reader_for_unknown_suffix():
    with pytest.raises(ValueError, match="output must end in"):
        read_predictions("x.parquet")


# -- outputs that must not be replaced, and checkpoints that must not be reused ---------------------
def test_existing_file_is_replaced_only_with_overwrite(model_file, store, tmp_path):
    out = tmp_path / "notes.ecsv"
    out.write_text("my own notes, nothing to do with remap\n")
    with pytest.raises(OutputRefused, match="notes.ecsv: already exists; pass --overwrite"):
        predict_files([store], out, model_file, progress=False)
    assert out.read_text() == "my own notes, nothing to do with remap\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.ecsv"]  # no lock, no partial folder
    predict_files([store], out, model_file, progress=False, overwrite=True)
    assert len(read_predictions(out)) == 50


@pytest.mark.parametrize("suffix", [".ecsv", ".fits", ".h5"])
def test_a_rerun_may_replace_its_own_output_but_not_another_runs(suffix, model_file, store, tmp_path):
    out = tmp_path / f"own{suffix}"
    predict_files([store], out, model_file, chunk_size=16, progress=False)
    assert len(read_predictions(out)) == 50
    predict_files([store], out, model_file, chunk_size=16, progress=False)  # the same command again
    with pytest.raises(OutputRefused, match="already exists"):  # another option: another run's output
        predict_files([store], out, model_file, chunk_size=8, progress=False)


def test_csv_output_keeps_no_fingerprint_so_reruns_need_overwrite(model_file, store, tmp_path):
    out = tmp_path / "p.csv"
    predict_files([store], out, model_file, progress=False)
    with pytest.raises(OutputRefused, match="already exists"):
        predict_files([store], out, model_file, progress=False)


def test_orphan_chunks_without_a_manifest_are_never_reused(model_file, store, tmp_path):
    """The reported failure: a crashed run's chunks, without manifest, taken by a run on other inputs."""
    other = write_dataset(tmp_path / "other.h5", toy_set(30, seed=9, id_prefix="o"))
    out = tmp_path / "o.ecsv"
    partial = _partial_of_run([other], model_file, out, keep=3)
    (partial / "manifest.json").unlink()
    summary = predict_files([store], out, model_file, chunk_size=10, progress=False)
    assert summary.chunks_reused == 0
    assert list(read_predictions(out)["source"]) == [f"{store}[{i}]" for i in range(50)]


def test_a_checkpoint_of_another_run_is_never_reused(model_file, store, tmp_path):
    """Manifest of this run, but one checkpoint written by another: that one is predicted again."""
    other = write_dataset(tmp_path / "other.h5", toy_set(50, seed=9, id_prefix="o"))
    foreign = _partial_of_run([other], model_file, tmp_path / "f.ecsv", keep=3)
    partial = _partial_of_run([store], model_file, tmp_path / "o.ecsv", keep=3)
    second = sorted(partial.glob("chunk_*.npz"))[1]
    second.write_bytes(sorted(foreign.glob("chunk_*.npz"))[1].read_bytes())
    summary = predict_files([store], tmp_path / "o.ecsv", model_file, chunk_size=10, progress=False)
    assert (summary.chunks_reused, summary.rows_reused) == (2, 20)  # chunks 0 and 2; chunk 1 predicted again
    assert list(read_predictions(tmp_path / "o.ecsv")["source"]) == [f"{store}[{i}]" for i in range(50)]


def test_ctrl_c_with_the_default_chunk_size_keeps_finished_rows(model_file, store, tmp_path, monkeypatch):
    from remap_lib import Predictor
    from remap_lib.prediction import streaming

    monkeypatch.setattr(streaming, "SLICE_ROWS", 8)
    predictor = Predictor(model_file, batch_size=8)
    real, calls = predictor.predict_prepared, []

    def ctrl_c_on_the_third_slice(prep, pmf=False):
        calls.append(len(prep.flux))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(prep, pmf)

    monkeypatch.setattr(predictor, "predict_prepared", ctrl_c_on_the_third_slice)
    out = tmp_path / "c.h5"
    with pytest.raises(PredictInterrupted) as stop:
        predict_files([store], out, predictor=predictor, progress=False)
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    assert str(stop.value) == (f"interrupted: rerun the same command to resume (1 chunk kept: 16 of 50 spectra "
                               f"done); `rm -r {partial}` discards them")
    assert not out.exists() and not (tmp_path / ".c.h5.lock").exists()
    monkeypatch.setattr(predictor, "predict_prepared", real)
    summary = predict_files([store], out, predictor=predictor, progress=False)
    assert (summary.chunks_reused, summary.rows_reused, summary.n_rows) == (1, 16, 50)
    np.testing.assert_array_equal(read_predictions(out)["teff_median"],
                                  Predictor(model_file).predict(str(store))["teff_median"])


def test_checkpoints_within_a_chunk_resume_mid_chunk(model_file, store, tmp_path, monkeypatch):
    """Finished rows are saved every ``save_every`` seconds inside a chunk; a rerun starts after the last."""
    from remap_lib.prediction import streaming

    monkeypatch.setattr(streaming, "SLICE_ROWS", 8)
    out = tmp_path / "m.ecsv"
    partial = _partial_of_run([store], model_file, out, keep=99, batch_size=8, chunk_size=4096, save_every=0)
    parts = sorted(p.name for p in partial.glob("chunk_*.npz"))
    assert parts == [f"chunk_000000_{a:06d}-{min(a + 8, 50):06d}.npz" for a in range(0, 50, 8)]
    for name in parts[4:]:  # as if killed after the fourth save
        (partial / name).unlink()
    summary = predict_files([store], out, model_file, batch_size=8, progress=False)
    assert (summary.chunks_reused, summary.rows_reused) == (4, 32)
    expected = predict_files([store], tmp_path / "ref.ecsv", model_file, progress=False)
    assert expected.n_rows == 50
    np.testing.assert_allclose(read_predictions(out)["teff_median"],
                               read_predictions(tmp_path / "ref.ecsv")["teff_median"], rtol=1e-6)


def test_sigterm_keeps_finished_work_and_says_how_to_resume(model_file, big_stores, tmp_path):
    out = tmp_path / "t.h5"
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    proc = subprocess.Popen(_predict_cmd(big_stores[0], out, model_file), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(partial.glob("chunk_*.npz"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    kept = sorted(partial.glob("chunk_*.npz"))
    rows = sum(int(p.stem.split("-")[1]) - int(p.stem.split("_")[2].split("-")[0]) for p in kept)
    assert (f"remap: interrupted: rerun the same command to resume ({len(kept)} chunks kept: {rows} of 2000 "
            f"spectra done); `rm -r {partial}` discards them") in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["t.h5.partial"]


def test_second_run_on_a_locked_output_is_refused_with_the_pid(model_file, store, tmp_path):
    out = tmp_path / "l.h5"
    with OutputLock(out):
        with pytest.raises(OutputError, match=rf"l.h5: another remap predict \(PID {os.getpid()}\) is writing"):
            predict_files([store], out, model_file, progress=False)
        assert sorted(p.name for p in tmp_path.iterdir()) == [".l.h5.lock"]  # the holder's, and nothing else
    assert not list(tmp_path.iterdir())  # released and removed
    predict_files([store], out, model_file, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.h5"]


@pytest.mark.parametrize("suffix", [".fits", ".ecsv", ".csv", ".h5"])
def test_non_ascii_paths_in_every_output_format(suffix, model_file, tmp_path):
    folder = tmp_path / "Sterne é α"
    folder.mkdir()
    store = write_dataset(folder / "ß.h5", toy_set(4, seed=2))
    out = tmp_path / f"Ergebnisse ü{suffix}"
    summary = predict_files([folder], out, model_file, progress=False)
    assert summary.n_rows == 4 and summary.n_failed == 0
    assert list(read_predictions(out)["source"]) == [f"{store}[{i}]" for i in range(4)]
