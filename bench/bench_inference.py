"""Benchmark: prediction throughput of the shipped model at MILES length (780 px) on CPU.

Not a test. Run with ``.venv/bin/python bench/bench_inference.py`` (about two minutes on 2 cores).

Inputs are the real MILES spectra as distributed (984 stars, native 3540–7410 Å grid, air), tiled
to ``--n`` spectra. Cases, each timed for ``--seconds`` after a warm-up, with
``torch.set_num_threads(--threads)``:

* **network, 1 member** — :meth:`Predictor.network` on spectra already on the model grid
  (BatchNorm folded into the convolutions, run as 1×k 2-D convolutions in channels-last layout:
  :class:`remap_lib.nn.model.InferenceNet`; ``torch.inference_mode``), batch ``--batch``;
* **network, all members** — the same for the whole calibrated ensemble;
* **end to end** — :meth:`Predictor.predict` on the native MILES arrays: validation, resampling,
  continuum normalization, network, out-of-domain distance and the output table; 1 member and all;
* **baseline** — one member exactly as trained (BatchNorm not folded) through
  :func:`remap_lib.evaluation.evaluate.predict`, the path the notebooks use.

The target (issue 5) is ≥ 2000 spectra/s at MILES length on 2 cores. Results go to
``bench/results/inference.json`` (written atomically) with the machine and its load average.
"""

from __future__ import annotations

import os
import sys

from machine import pin_threads_from_argv  # bench/ is on sys.path when a script in it runs

pin_threads_from_argv()  # before numpy and torch are imported

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import machine_info  # noqa: E402

from remap_lib.data.sources.miles import load_miles  # noqa: E402
from remap_lib.evaluation.evaluate import predict as notebook_predict  # noqa: E402
from remap_lib.fileio import atomic_write  # noqa: E402
from remap_lib.nn.modelfile import load_members  # noqa: E402
from remap_lib.prediction.inference import Predictor  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "inference.json"


def rate(fn, n: int, seconds: float) -> float:
    """Spectra per second of ``fn()`` (which handles ``n`` spectra), after one warm-up call."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 2:
            return calls * n / elapsed


def _peak_gflops() -> dict | None:
    """This machine's matmul and conv1d peaks as measured by bench_training.py (None if not run)."""
    path = RESULTS.with_name("training.json")
    if not path.exists():
        return None
    peak = json.loads(path.read_text()).get("peak", {})
    return {k: v.get("gflop_per_s") for k, v in peak.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=4096, help="spectra per timed call")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10.0, help="timing window per case")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine_info()
    info.update({"torch": torch.__version__, "threads": args.threads})

    miles = load_miles(progress=False)
    reps = int(np.ceil(args.n / len(miles.flux)))
    raw_flux = np.tile(miles.flux, (reps, 1))[: args.n].astype(np.float64)
    full = Predictor(args.model, batch_size=args.batch)
    one = Predictor(args.model, batch_size=args.batch, members=1)
    prep = one.prepare((miles.wave, raw_flux[: len(miles.flux)]))
    grid_flux = np.tile(prep.flux, (reps, 1))[: args.n]
    grid_mask = np.tile(prep.mask, (reps, 1))[: args.n]
    members = len(full.networks)
    unfused, _ = load_members(full.path)[0][0]
    print(f"{full.path.name}: {members} members, {grid_flux.shape[1]} px; {args.n} spectra per call; "
          f"{args.threads} threads")

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        one.networks[0](torch.as_tensor(grid_flux[:1]), torch.as_tensor(grid_mask[:1]))
    flops = counter.get_total_flops()  # convolutions and matmuls of one spectrum through one member
    peak = _peak_gflops()
    print(f"{flops / 1e6:.1f} MFLOP per spectrum per member; machine peak (bench_training.py): {peak}")
    cases = []

    def case(name, fn, n_members, includes_preprocessing):
        r = rate(fn, args.n, args.seconds)
        gflops = r * n_members * flops / 1e9
        cases.append({"name": name, "npix": int(grid_flux.shape[1]), "batch_size": args.batch,
                      "threads": args.threads, "members": n_members, "spectra_per_s": r,
                      "includes_preprocessing": includes_preprocessing, "network_gflop_per_s": gflops})
        print(f"{name:55s} {r:8.0f} spectra/s  ({gflops:.0f} GFLOP/s in the network)")

    case("network, 1 member", lambda: one.network(grid_flux, grid_mask), 1, False)
    case(f"network, {members} members", lambda: full.network(grid_flux, grid_mask), members, False)
    case("end to end from native MILES arrays, 1 member",
         lambda: one.predict((miles.wave, raw_flux)), 1, True)
    case(f"end to end from native MILES arrays, {members} members",
         lambda: full.predict((miles.wave, raw_flux)), members, True)
    baseline_rate = rate(lambda: notebook_predict(unfused, grid_flux, grid_mask, full.bins, batch_size=args.batch),
                         args.n, args.seconds)
    print(f"{'baseline: 1 member as trained (evaluate.predict)':55s} {baseline_rate:8.0f} spectra/s")
    info["load_average_end"] = list(os.getloadavg())
    result = {"command": "bench/bench_inference.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": info,
              "settings": {"n": args.n, "batch": args.batch, "seconds": args.seconds, "model": full.path.name,
                           "model_sha256": full.sha256},
              "flop_per_spectrum_per_member": flops, "peak_gflop_per_s": peak,
              "cases": cases,
              "baseline": {"name": "1 member as trained: 1-D convolutions, BatchNorm not folded "
                                   "(remap_lib.evaluation.evaluate.predict)", "spectra_per_s": baseline_rate},
              "target_spectra_per_s": 2000}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
