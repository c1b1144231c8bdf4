"""Benchmark: `remap predict` streaming over 10 k, 100 k and 1 M spectra from HDF5, with peak memory.

Not a test. Run with ``.venv/bin/python bench/bench_streaming.py`` (the 1 M run takes a while on
2 cores: about N / throughput seconds; ``--sizes 10000 100000`` for a quick look).

For each size N the script writes an HDF5 store in the project's layout (:mod:`remap_lib.data.dataset`)
holding N spectra on the shipped model's grid: the 984 MILES stars, continuum-normalized exactly as
`remap predict` would, repeated with fresh Gaussian noise at S/N 50 (seeded). Flux is written in
blocks, so generating 1 M spectra (3.1 GB of float32) needs little memory. Then it runs, as a
separate process, exactly what a user would type::

    remap predict STORE.h5 -o OUT.h5 --quiet --threads T [--members M]

and records the wall time, throughput and the child's peak resident memory (``ru_maxrss`` from
``os.wait4``). The cost should grow linearly with N (constant spectra/s) and memory should stay
flat: the target (issue 5) is a peak RSS ≤ 2 GB at 1 M spectra. Results go to
``bench/results/streaming.json`` (written atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from machine import machine_info  # bench/ is on sys.path when a script in it runs

from remap_lib.data.dataset import FORMAT_VERSION, LABEL_NAMES  # noqa: E402
from remap_lib.fileio import atomic_path, atomic_write  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "streaming.json"


def base_spectra(model=None):
    """MILES spectra on the model's grid (flux, mask), the model's wave and instrument dict."""
    from remap_lib.data.sources.miles import load_miles
    from remap_lib.prediction.inference import Predictor

    predictor = Predictor(model, members=1)
    miles = load_miles(progress=False)
    prep = predictor.prepare((miles.wave, miles.flux.astype(np.float64)))
    ok = np.array([e == "" for e in prep.errors])
    return prep.flux[ok], prep.mask[ok], predictor.wave, predictor.instrument.to_dict()


def write_store(path: Path, n: int, flux0, mask0, wave, instrument: dict, snr: float = 50.0, seed: int = 0,
                block: int = 16384) -> Path:
    """An HDF5 store of ``n`` noisy copies of ``flux0`` rows, written block by block (atomically)."""
    rng = np.random.default_rng(seed)
    npix = flux0.shape[1]
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["format_version"] = FORMAT_VERSION
        h5.attrs["kind"] = "observed"
        h5.attrs["instrument"] = json.dumps(instrument)
        h5.attrs["provenance"] = json.dumps({"generated_by": "bench/bench_streaming.py", "snr": snr, "seed": seed})
        h5.create_dataset("wave", data=wave)
        flux = h5.create_dataset("flux", shape=(n, npix), dtype=np.float32, chunks=(1024, npix))
        # ivar and mask are never written: HDF5 returns their fill values (inf = noise-free, False = good)
        h5.create_dataset("ivar", shape=(n, npix), dtype=np.float32, chunks=(1024, npix), fillvalue=np.inf)
        mask = h5.create_dataset("mask", shape=(n, npix), dtype=bool, chunks=(1024, npix), fillvalue=False)
        labels = h5.create_dataset("labels", shape=(n, 3), dtype=np.float64, fillvalue=np.nan)
        labels.attrs["names"] = list(LABEL_NAMES)
        ids = h5.create_dataset("ids", shape=(n,), dtype=h5py.string_dtype())
        h5.create_group("meta")
        for start in range(0, n, block):
            stop = min(start + block, n)
            rows = np.arange(start, stop) % len(flux0)
            noisy = flux0[rows] + rng.standard_normal((stop - start, npix), dtype=np.float32) / np.float32(snr)
            flux[start:stop] = np.where(mask0[rows], 1.0, noisy)
            if mask0[rows].any():
                mask[start:stop] = mask0[rows]
            ids[start:stop] = np.array([f"g{i:07d}" for i in range(start, stop)], dtype=object)
    return path


def run_predict(store: Path, out: Path, threads: int, members: int | None, chunk_size: int) -> dict:
    cmd = [sys.executable, "-m", "remap_lib.cli", "predict", str(store), "-o", str(out), "--quiet",
           "--threads", str(threads), "--chunk-size", str(chunk_size)]
    if members:
        cmd += ["--members", str(members)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {proc.returncode}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024.0, "cpu_s": usage.ru_utime + usage.ru_stime,
            "command": " ".join(["remap", *cmd[3:]])}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--members", type=int, default=None, help="ensemble members to use (default: all)")
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--workdir", default="work/bench_streaming", help="where stores and outputs go")
    parser.add_argument("--keep", action="store_true", help="keep the generated stores and outputs")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    flux0, mask0, wave, instrument = base_spectra()
    runs = []
    for n in sorted(args.sizes):
        store = work / f"store_{n}.h5"
        t0 = time.perf_counter()
        if not store.exists():
            write_store(store, n, flux0, mask0, wave, instrument)
        gen = time.perf_counter() - t0
        out = work / f"pred_{n}.h5"
        out.unlink(missing_ok=True)
        res = run_predict(store, out, args.threads, args.members, args.chunk_size)
        with h5py.File(out, "r") as h5:
            rows = h5["predictions"].shape[0]
            failed = int(np.sum(h5["predictions"]["error"] != b""))
        if rows != n:
            raise SystemExit(f"{out}: {rows} rows for {n} spectra")
        run = {"n_spectra": n, **res, "spectra_per_s": n / res["wall_s"], "failed_rows": failed,
               "store_gb": store.stat().st_size / 1e9, "generate_s": gen}
        runs.append(run)
        print(f"N = {n:>9,d}: {res['wall_s']:8.1f} s, {run['spectra_per_s']:7.0f} spectra/s, "
              f"peak RSS {res['peak_rss_mb']:7.0f} MB, {failed} failed rows")
        if not args.keep:
            store.unlink()
            out.unlink()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    info["load_average_end"] = list(os.getloadavg())
    result = {"command": "bench/bench_streaming.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": info,
              "settings": {"threads": args.threads, "members": args.members, "chunk_size": args.chunk_size},
              "runs": runs, "target_peak_rss_mb": 2048}
    with atomic_write(Path(args.out), "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
