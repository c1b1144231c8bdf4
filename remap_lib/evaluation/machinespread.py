"""How far the same build's results move between machines, set against the study's uncertainty (issue 11).

The same commit, profile and seeds give the same numbers on the same machine, bit for bit. On another
CPU they need not: PyTorch's CPU kernels may pick other vector paths (AVX-512 or AVX2, another oneDNN
blocking), so floating-point sums are added in another order, and training amplifies those last-bit
differences into other weights. This module compares the ``results/metrics.json`` of two or more
builds key by key and sets the headline figures of each beside the committed study's seed spread
and 95 % interval, so the reproducibility page can say what reproduces exactly and what only within
the spread::

    python -m remap_lib.evaluation.machinespread "AMD EPYC=git:324330b:results/metrics.json" \
        "Intel Xeon=git:96536c3:results/metrics.json"

writes ``results/machine_spread.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from remap_lib.data.dataset import LABEL_NAMES
from remap_lib.fileio import write_json
from remap_lib.paths import REPO_ROOT, RESULTS_DIR

SPREAD_FILE = RESULTS_DIR / "machine_spread.json"
#: The study row and table whose uncertainty the builds' calibration-star figures are set against.
STUDY_ROW, STUDY_TABLE = "deep-REMAP", "calibration_stars"


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Every leaf of a nested metrics dict or list, keyed by its path (``a.b.0.c``)."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return {prefix: value}


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def compare(a: dict, b: dict) -> dict:
    """Key-by-key comparison of two metrics files: how many values are identical, differ, or exist in one only."""
    fa, fb = flatten(a), flatten(b)
    common = sorted(set(fa) & set(fb))
    differ = [k for k in common if not _same(fa[k], fb[k])]
    numeric = [k for k in differ if isinstance(fa[k], int | float) and isinstance(fb[k], int | float)
               and not isinstance(fa[k], bool) and fa[k] != 0]
    rel = {k: abs(fb[k] - fa[k]) / abs(fa[k]) for k in numeric}
    largest = sorted(rel, key=rel.get, reverse=True)[:5]
    sections = sorted({k.split(".")[0] for k in differ})
    return {"values": len(common), "identical": len(common) - len(differ), "different": len(differ),
            "only_in_first": len(set(fa) - set(fb)), "only_in_second": len(set(fb) - set(fa)),
            "sections_that_differ": sections,
            "largest_relative_differences": {k: {"first": fa[k], "second": fb[k], "relative": rel[k]}
                                             for k in largest}}


def headline(metrics: dict) -> dict:
    """The figures the book leads with: σ on the calibration stars per label and the share of giants called giant."""
    out: dict = {}
    stats = metrics.get("validation", {}).get("stats", {})
    out["calibration_sigma"] = {n: stats[n]["sigma"] for n in LABEL_NAMES if n in stats}
    giants = metrics.get("giants", {}).get("giant_candidate", {})
    if "fraction_called_giant" in giants:
        out["giants_called_giant"] = giants["fraction_called_giant"]
    return out


def study_band(study: dict, row: str = STUDY_ROW, table: str = STUDY_TABLE) -> dict | None:
    """The study's σ for ``row`` on ``table`` (mean, std over seeds and 95 % interval per label) and its giants.

    The giants carry two intervals: ``ci95`` (stars and fine-tuning seeds) and ``ci95_models``
    (also the fold models, fine-tuned on other dwarfs; :func:`remap_lib.evaluation.studystats.models_bootstrap`),
    and from the shares of every fold model and seed: ``largest_seed_range`` (the most one fold model
    moved between seeds), ``model_means`` (the range of the fold models' means over seeds) and
    ``single_models`` (the range of every single model).
    """
    entry = next((r for r in study.get("rows", []) if r["name"] == row), None)
    t = (entry or {}).get(table)
    if not t:
        return None
    band = {n: {"mean": t[n]["sigma"], "seed_std": t[n]["sigma_std"], "ci95": t[n]["ci95"]} for n in LABEL_NAMES}
    g = (entry.get("giants") or {})
    if g.get("accuracy") is not None:
        band["giants_called_giant"] = {"mean": g["accuracy"], "seed_std": g["accuracy_std"],
                                       "ci95": g["accuracy_ci95"],
                                       "ci95_models": (g.get("ci95_models") or {}).get("accuracy")}
        per_model = g.get("accuracy_per_model")  # [seed][fold model]
        if per_model and len(per_model) > 1:
            by_model = list(zip(*per_model, strict=True))  # [fold model][seed]
            means = [sum(m) / len(m) for m in by_model]
            every = [a for m in by_model for a in m]
            band["giants_called_giant"].update({"largest_seed_range": max(max(m) - min(m) for m in by_model),
                                                "model_means": [min(means), max(means)],
                                                "single_models": [min(every), max(every)]})
    return {"row": row, "table": table, "n_seeds": t["n_seeds"], **band}


def widest_interval(band: dict) -> tuple[str, list]:
    """The widest of a band entry's intervals and its key.

    For the giants that is ``single_models``, the range of the share over every fold model and seed of
    the study: a build is one fine-tuned ensemble, not the mean over five folds that ``ci95_models``
    describes, so two builds are compared against what single models give.
    """
    for key in ("single_models", "ci95_models", "ci95"):
        if band.get(key) and None not in band[key]:
            return key, band[key]
    return "ci95", [None, None]


def spread(builds: dict[str, dict], study: dict | None = None) -> dict:
    """Headlines per build, every build compared with the first, and whether the study's interval covers them."""
    names = list(builds)
    if len(names) < 2:
        raise ValueError("need at least two builds to compare")
    heads = {n: headline(m) for n, m in builds.items()}
    out: dict = {"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "builds": heads,
                 "comparisons": {f"{n} vs {names[0]}": compare(builds[names[0]], builds[n]) for n in names[1:]}}
    sig = {n: [h["calibration_sigma"].get(n) for h in heads.values()] for n in LABEL_NAMES}
    out["range"] = {n: {"min": min(v), "max": max(v), "difference": max(v) - min(v)}
                    for n, v in sig.items() if all(x is not None for x in v)}
    giants = [h.get("giants_called_giant") for h in heads.values()]
    if all(g is not None for g in giants):
        out["range"]["giants_called_giant"] = {"min": min(giants), "max": max(giants),
                                               "difference": max(giants) - min(giants)}
    band = study_band(study) if study else None
    if band:
        out["study"] = band
        # Two tests per figure. ``inside``: every build lies inside the study's 95 % interval (a level
        # test; it also needs the builds to share the study's configuration, which the giant share does
        # not: the book fine-tunes on its own split, the study on cross-validation folds). ``covered``:
        # the builds differ by no more than the half-width of the study's widest interval, so that an
        # interval of that width about either build holds the other: the spread test of issue 11.
        out["inside"], out["covered"], out["covered_by"] = {}, {}, {}
        for k, r in out["range"].items():
            if k not in band or None in band[k]["ci95"]:
                continue
            lo, hi = band[k]["ci95"]
            out["inside"][k] = bool(lo <= r["min"] and r["max"] <= hi)
            key, (wlo, whi) = widest_interval(band[k])
            out["covered"][k], out["covered_by"][k] = bool(r["difference"] <= (whi - wlo) / 2), key
    return out


def compare_reruns(first_dir, second_dir) -> dict:
    """Study records run twice (same seeds and machine): how many give identical predictions.

    Only the rows both runs predicted are compared (a later version may add rows to a run).
    """
    first_dir, second_dir = Path(first_dir), Path(second_dir)
    pairs = [(p, second_dir / p.name) for p in sorted(first_dir.glob("*.json")) if (second_dir / p.name).is_file()]
    same, rows = [], set()
    for p, q in pairs:
        a, b = (json.loads(f.read_text(encoding="utf-8"))["predictions"] for f in (p, q))
        common = sorted(set(a) & set(b))
        rows.update(common)
        if common and all(a[r] == b[r] for r in common):
            same.append(p.name)
    return {"records": len(pairs), "identical_predictions": len(same), "rows_compared": sorted(rows),
            "different": sorted({p.name for p, _ in pairs} - set(same))}


def read_build(path) -> str:
    """The text of a build's metrics file: a path, or ``git:REV:FILE`` for a committed version of it."""
    text = str(path)
    if text.startswith("git:"):
        rev, _, file = text[4:].partition(":")
        return subprocess.run(["git", "show", f"{rev}:{file}"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout
    return Path(path).read_text(encoding="utf-8")


def _parse_build(text: str) -> tuple[str, Path]:
    name, sep, path = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: give a build as 'NAME=path/to/metrics.json'")
    return name, Path(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remap_lib.evaluation.machinespread", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="+", type=_parse_build,
                        help="NAME=metrics.json (or NAME=git:REV:results/metrics.json) of each build; the first "
                             "is the reference")
    parser.add_argument("--study", default=str(RESULTS_DIR / "study.json"),
                        help="study aggregate whose interval the spread is set against")
    parser.add_argument("--out", default=str(SPREAD_FILE), help="where to write (default results/machine_spread.json)")
    parser.add_argument("--rerun", nargs=2, metavar=("FIRST", "SECOND"), default=None,
                        help="two folders of the same study records run twice on one machine: are they identical?")
    args = parser.parse_args(argv)
    builds = {}
    for name, path in args.builds:
        try:
            builds[name] = json.loads(read_build(path))
        except (OSError, json.JSONDecodeError, subprocess.CalledProcessError) as err:
            print(f"error: {path}: cannot read the metrics file ({err})", file=sys.stderr)
            return 2
    study_path = Path(args.study)
    study = json.loads(study_path.read_text(encoding="utf-8")) if study_path.is_file() else None
    result = spread(builds, study)
    result["sources"] = {name: str(path) for name, path in args.builds}
    if args.rerun:
        result["rerun_same_machine"] = compare_reruns(*args.rerun)
        r = result["rerun_same_machine"]
        print(f"rerun on one machine: {r['identical_predictions']} of {r['records']} records identical")
    elif Path(args.out).is_file():  # a rerun check is kept until another one replaces it
        kept = json.loads(Path(args.out).read_text(encoding="utf-8")).get("rerun_same_machine")
        if kept:
            result["rerun_same_machine"] = kept
    write_json(args.out, result)
    for key, c in result["comparisons"].items():
        print(f"{key}: {c['different']} of {c['values']} values differ ({', '.join(c['sections_that_differ'])})")
    for key, r in result["range"].items():
        cover = result.get("covered", {}).get(key)
        print(f"  {key}: {r['min']:.4g} .. {r['max']:.4g}" + ("" if cover is None else
                                                             f"; inside the study's 95 % interval: "
                                                             f"{result['inside'].get(key)}; spread within its "
                                                             f"half-width ({result['covered_by'][key]}): {cover}"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
