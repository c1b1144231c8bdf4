"""Benchmark: PySME synthesis cost and accuracy, PySME's defaults vs the settings the grid uses.

Not a test. Run with ``.venv/bin/python bench/bench_synthesis.py`` (several minutes per node on a
busy 2-core machine; ``--nodes 2`` or ``--quick`` for less).

For each chosen MARCS node the spectrum is synthesized over the grid's window (4945–5755 Å, air)
with

* ``pysme-default``: :data:`remap_lib.data.sources.sme.PYSME_DEFAULT` — PySME's adaptive wavelength
  grid and ``accrt=1e-4``, the reference;
* ``ours``: :data:`remap_lib.data.sources.sme.DEFAULT_SETTINGS` — a fixed log-uniform R=150000 transfer
  grid and ``accrt=1e-3`` (what ``remap grid build`` uses);
* with ``--extra``: two more variants (R=100000 transfer grid; ``accrt=3e-3``).

Each output is degraded to R=11000 onto :data:`remap_lib.data.sources.sme_grid.GRID_STORAGE` with
:func:`remap_lib.spectra.preprocess.degrade`, exactly as the grid is stored, and compared with the
reference: rms and max |Δflux| over the stored pixels. Only the ``synthesize()`` call is timed,
single-threaded (``OMP_NUM_THREADS=1``), after one warm-up synthesis that pays for imports,
reading the line list and loading PySME's library; the warm-up is reported separately. Wall time
and process CPU time are both recorded: on a loaded machine wall time is inflated by other
processes, CPU time is the cost per spectrum per core. The load average at start and end is
recorded as measured. Results go to ``bench/results/synthesis.json`` (written atomically).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from machine import machine_info as base_machine_info  # noqa: E402

from remap_lib.data.sources.marcs import find_model  # noqa: E402
from remap_lib.data.sources.sme import DEFAULT_SETTINGS, PYSME_DEFAULT, synthesize  # noqa: E402
from remap_lib.data.sources.sme_grid import GRID_STORAGE  # noqa: E402
from remap_lib.fileio import atomic_write  # noqa: E402
from remap_lib.spectra.preprocess import degrade  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "synthesis.json"
TARGET_SECONDS = 3.0  # per spectrum per core
TARGET_RMS = 0.002  # after degradation to R = 11000

#: name → (Teff, log g, [M/H]); the first ``--nodes N`` are used.
NODES = {
    "sun": (5750.0, 4.5, 0.0),
    "cool-dwarf": (4000.0, 4.5, 0.0),
    "metal-poor-giant": (4500.0, 1.5, -2.0),
    "hot-dwarf": (6750.0, 4.0, -0.5),
}


def settings_variants(extra: bool) -> dict:
    variants = {"pysme-default": PYSME_DEFAULT, "ours": DEFAULT_SETTINGS}
    if extra:
        variants["ours-R100k"] = replace(DEFAULT_SETTINGS, transfer_resolution=100_000.0)
        variants["ours-accrt3e-3"] = replace(DEFAULT_SETTINGS, accrt=3e-3)
    return variants


def machine_info() -> dict:
    return {**base_machine_info(),
            "threads": {v: os.environ[v] for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}


def timed_synthesis(model, settings):
    wall, cpu = time.perf_counter(), time.process_time()
    wave, flux, _ = synthesize(model, settings)
    return wave, flux, time.perf_counter() - wall, time.process_time() - cpu


def run(node_names, variants, storage, window, repeat):
    """Time every variant on every node; compare each with pysme-default after degradation."""
    results = []
    for name in node_names:
        model = find_model(*NODES[name])
        degraded, row = {}, {"node": name, "model": model.name, "teff": model.teff, "logg": model.logg,
                             "monh": model.monh, "settings": {}}
        for label, settings in variants.items():
            settings = replace(settings, wave_min=window[0], wave_max=window[1])
            walls, cpus = [], []
            for _ in range(repeat):
                wave, flux, wall, cpu = timed_synthesis(model, settings)
                walls.append(wall)
                cpus.append(cpu)
            out, _, _ = degrade(wave, flux, storage, source=f"{model.name} [{label}]")
            degraded[label] = np.asarray(out, dtype=np.float64)
            row["settings"][label] = {"wall_s": min(walls), "cpu_s": min(cpus), "wall_s_all": walls,
                                      "cpu_s_all": cpus, "native_points": int(wave.size),
                                      "flux_min": float(np.nanmin(flux))}
            print(f"  {name:17s} {label:15s} wall {min(walls):7.2f} s  cpu {min(cpus):7.2f} s  "
                  f"{wave.size:7d} points", flush=True)
        ref = degraded["pysme-default"]
        for label, flux in degraded.items():
            good = np.isfinite(flux) & np.isfinite(ref)
            diff = flux[good] - ref[good]
            row["settings"][label].update(rms_vs_default=float(np.sqrt(np.mean(diff ** 2))),
                                          max_abs_vs_default=float(np.max(np.abs(diff))),
                                          compared_pixels=int(good.sum()))
        results.append(row)
    return results


def summarize(results, variants) -> dict:
    summary = {}
    for label in variants:
        rows = [r["settings"][label] for r in results]
        summary[label] = {
            "mean_wall_s": float(np.mean([r["wall_s"] for r in rows])),
            "mean_cpu_s": float(np.mean([r["cpu_s"] for r in rows])),
            "max_cpu_s": float(np.max([r["cpu_s"] for r in rows])),
            "worst_rms_vs_default": float(np.max([r["rms_vs_default"] for r in rows])),
            "worst_max_abs_vs_default": float(np.max([r["max_abs_vs_default"] for r in rows])),
        }
    ours = summary["ours"]
    summary["targets"] = {"seconds_per_spectrum_per_core": TARGET_SECONDS, "rms": TARGET_RMS,
                          "ours_meets_time (max cpu_s)": ours["max_cpu_s"] <= TARGET_SECONDS,
                          "ours_meets_rms": ours["worst_rms_vs_default"] <= TARGET_RMS}
    return summary


def print_table(results, summary):
    print()
    print(f"{'node':17s} {'settings':15s} {'wall s':>8s} {'cpu s':>8s} {'points':>8s} {'rms Δ':>9s} {'max |Δ|':>9s}")
    for row in results:
        for label, r in row["settings"].items():
            print(f"{row['node']:17s} {label:15s} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['native_points']:8d} "
                  f"{r['rms_vs_default']:9.2e} {r['max_abs_vs_default']:9.2e}")
    print()
    for label, s in summary.items():
        if label != "targets":
            print(f"{label:15s} mean cpu {s['mean_cpu_s']:6.2f} s/spectrum/core (wall {s['mean_wall_s']:6.2f} s), "
                  f"worst rms {s['worst_rms_vs_default']:.2e}, worst max |Δ| {s['worst_max_abs_vs_default']:.2e}")
    t = summary["targets"]
    print(f"targets: ≤ {t['seconds_per_spectrum_per_core']} s per spectrum per core "
          f"({'met' if t['ours_meets_time (max cpu_s)'] else 'NOT met'}), rms ≤ {t['rms']} "
          f"({'met' if t['ours_meets_rms'] else 'NOT met'})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="4",
                        help=f"how many of {list(NODES)} (a number, in that order), or comma-separated names")
    parser.add_argument("--quick", action="store_true",
                        help="100 Å window (5000–5100 Å, stored 5005–5095 Å) instead of 4945–5755 Å")
    parser.add_argument("--extra", action="store_true", help="also time two other settings")
    parser.add_argument("--repeat", type=int, default=1, help="timed syntheses per node and setting (min kept)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = list(NODES)[: int(args.nodes)] if args.nodes.isdigit() else [n.strip() for n in args.nodes.split(",")]
    unknown = [n for n in names if n not in NODES]
    if unknown:
        parser.error(f"unknown node(s) {unknown}; choose from {list(NODES)}")

    info = machine_info()
    if args.quick:
        window = (5000.0, 5100.0)
        storage = replace(GRID_STORAGE, name="SME-R11000-quick", wave_min=5005.0, wave_max=5095.0)
    else:
        window = (DEFAULT_SETTINGS.wave_min, DEFAULT_SETTINGS.wave_max)
        storage = GRID_STORAGE
    variants = settings_variants(args.extra)
    print(f"{info['cpu_model']}, {info['nproc']} cores, load average {info['load_average_start']}")
    print(f"window {window[0]}–{window[1]} Å → {storage.name} ({storage.npix} px); nodes {names}", flush=True)

    # warm-up: imports, line-list reading, PySME's library (not counted in the timings)
    warm_model = find_model(*NODES[names[0]])
    wall, cpu = time.perf_counter(), time.process_time()
    synthesize(warm_model, replace(DEFAULT_SETTINGS, wave_min=window[0], wave_max=window[1]))
    warmup = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "node": names[0],
              "settings": "ours"}
    print(f"warm-up (first synthesis, incl. line list): wall {warmup['wall_s']:.2f} s, cpu {warmup['cpu_s']:.2f} s")

    results = run(names, variants, storage, window, args.repeat)
    summary = summarize(results, variants)
    info["load_average_end"] = list(os.getloadavg())
    report = {
        "command": "bench/bench_synthesis.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": info,
        "versions": {p: metadata.version(p) for p in ("pysme-astro", "numpy", "scipy")},
        "window": list(window),
        "storage": storage.to_dict(),
        "variants": {k: v.to_dict() for k, v in variants.items()},
        "warmup": warmup,
        "nodes": results,
        "summary": summary,
        "notes": "wall_s/cpu_s: min over --repeat runs of the synthesize() call only, single-threaded. "
                 "rms/max |Δflux| vs pysme-default after degradation onto the storage grid.",
    }
    with atomic_write(args.out, "w") as fh:
        json.dump(report, fh, indent=1)
    print_table(results, summary)
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
