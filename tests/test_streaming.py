"""remap_lib.streaming: chunked, resumable, all-or-nothing output; torchrun shards; output formats."""

from __future__ import annotations

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

from remap_lib.dataset import write_dataset
from remap_lib.streaming import PARTIAL_SUFFIX, plan_chunks, predict_files, read_predictions

ROOT = Path(__file__).resolve().parents[1]


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


def _partial_of_run(inputs, model_file, out, keep):
    """A partial folder as a killed run leaves it: the manifest and the first ``keep`` chunks."""
    from remap_lib import streaming

    saved = streaming._merge
    streaming._merge = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())
    try:
        with pytest.raises(KeyboardInterrupt):
            predict_files(inputs, out, model_file, chunk_size=10, progress=False)
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


def test_sigkill_leaves_no_output_and_rerun_completes(model_file, tmp_path):
    """Kill `remap predict` with SIGKILL mid-run: no output file; the same command then finishes."""
    big = tmp_path / "big.h5"
    write_dataset(big, toy_set(3000, seed=5, n_val=0))
    out = tmp_path / "k.h5"
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    cmd = [sys.executable, "-m", "remap_lib.cli", "predict", str(big), "-o", str(out), "--model", str(model_file),
           "--chunk-size", "5", "--workers", "0", "--quiet", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(partial.glob("chunk_*.npz"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(partial.glob("chunk_*.npz")))
    assert 3 <= done < 600, "the run must be killed mid-way for this test to mean anything"
    assert not out.exists()
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"(resumed: {5 * done} spectra in {done} chunks kept by an interrupted run)" in rerun.stdout
    table = read_predictions(out)
    assert len(table) == 3000 and np.all(np.isfinite(table["teff_median"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.h5", "k.h5"]  # no checkpoint, lock or temporary


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
