"""Where the dwarfs' σ comes from: the study's error tail, and the stars every method misses.

σ is a standard deviation, so on the cross-validated dwarfs a few large misses set it (issue 12's goal
is the paper's σ). For each row of :data:`TAIL_ROWS` (remap's recipe, the MSE CNN, The Cannon and the
χ² grid fit) a dwarf's *miss* is its predicted median minus its literature label, per seed. Per label
and row, like the study's σ, each figure is per seed, then averaged over the row's seeds:

* ``robust_sigma``: 1.4826 × the MAD of the misses (σ of a Gaussian core), and ``n_tail``, the dwarfs
  missed by more than :data:`CLIP` robust σ from the median miss;
* **consensus outliers**: the dwarfs that every row misses by more than :data:`CLIP` of its own robust
  σ, in the same direction, on its seed-mean miss. The networks and The Cannon learn from the same
  literature labels, but the χ² fit to the synthetic grid reads none: when it agrees with them on a
  star, the star's literature label (or its spectrum) is more likely at fault than a method. Their
  MILES names and spectral types are listed so that a reader can judge;
* ``sigma_without_consensus``: the row's σ with those stars left out, a diagnostic only (the
  headline σ keeps every star), with a 95 % bootstrap interval over stars.

The rule (3 robust σ, every row, same sign) was fixed before looking at which stars it picks. Run
``python -m remap_lib.evaluation.studytail`` after ``remap study aggregate``; it writes
``results/study_tail.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from remap_lib.constants import LABEL_NAMES
from remap_lib.evaluation.folds import read_folds
from remap_lib.evaluation.studyrows import SHIPPED_ROW
from remap_lib.evaluation.studystats import collect, giant_ids, load_records, row_tables
from remap_lib.fileio import write_json
from remap_lib.paths import RESULTS_DIR

#: The rows compared: remap's recipe first, then peers trained apart from it (the χ² fit on no label at all).
TAIL_ROWS = (SHIPPED_ROW, "MSE regression CNN", "The Cannon", "chi2 grid fit")
#: A miss beyond this many robust σ of its row's misses is in the tail (fixed a priori).
CLIP = 3.0
MAD_TO_SIGMA = 1.4826  # σ of a Gaussian per unit of median absolute deviation
REPORT = RESULTS_DIR / "study_tail.json"
STUDY_OUT = RESULTS_DIR / "study"


def robust_sigma(misses: np.ndarray) -> float:
    """1.4826 × the median absolute deviation about the median (NaN ignored)."""
    m = misses[np.isfinite(misses)]
    return float(MAD_TO_SIGMA * np.median(np.abs(m - np.median(m))))


def consensus(misses: dict[str, np.ndarray], clip: float = CLIP) -> np.ndarray:
    """Stars every row misses by more than ``clip`` of its robust σ, all in one direction.

    ``misses``: row -> (n,) seed-mean misses of one label; returns an (n,) bool mask.
    """
    signs = []
    for m in misses.values():
        far = np.abs(m - np.nanmedian(m)) > clip * robust_sigma(m)
        signs.append(np.where(far, np.sign(m), 0.0))
    signs = np.array(signs)
    return np.all(signs > 0, axis=0) | np.all(signs < 0, axis=0)


def _sigma(per_seed: np.ndarray, keep: np.ndarray) -> float:
    """The study's σ: per seed the standard deviation over the kept stars, then the mean over seeds."""
    return float(np.mean([np.nanstd(s[keep]) for s in per_seed]))


def _bootstrap(per_seed: np.ndarray, keep: np.ndarray, n_boot: int, rng) -> list[float]:
    rows = np.flatnonzero(keep)
    draws = [_sigma(per_seed[:, rows[rng.integers(0, rows.size, rows.size)]], slice(None)) for _ in range(n_boot)]
    return [float(v) for v in np.percentile(draws, [2.5, 97.5])]


def tail_report(records: list[dict], folds, catalogue: dict | None = None, rows=TAIL_ROWS,
                n_boot: int = 1000, seed: int = 0) -> dict:
    """The report of the module docstring from study records; ``catalogue``: id -> {name, sptype}."""
    entries = collect(records)
    missing = [r for r in rows if r not in entries]
    if missing:
        raise KeyError(f"no study records for {missing}: run `remap study run --rows ...` first")
    ids = folds["id"].tolist()
    per_row, truth, giants = {}, None, giant_ids(entries)
    for name in rows:
        table = row_tables(entries[name], folds, giants)["cv_dwarfs"]
        if not table["seeds"]:
            raise ValueError(f"{name!r} has no complete seed")
        truth = table["truth"]
        preds = np.array([parts[0][:, :, 0] for parts in table["seeds"].values()])  # (seeds, n, 3) medians
        per_row[name] = preds - truth[None]
    rng = np.random.default_rng(seed)
    labels = {}
    for j, label in enumerate(LABEL_NAMES):
        seed_mean = {name: np.nanmean(m[:, :, j], axis=0) for name, m in per_row.items()}
        odd = consensus(seed_mean)
        stats = {}
        for name, m in per_row.items():
            robust = [robust_sigma(miss) for miss in m[:, :, j]]
            tail = [np.sum(np.abs(miss - np.nanmedian(miss)) > CLIP * r) for miss, r in zip(m[:, :, j], robust,
                                                                                             strict=True)]
            stats[name] = {"sigma": _sigma(m[:, :, j], np.ones(len(ids), bool)),
                           "robust_sigma": float(np.mean(robust)), "n_tail": float(np.mean(tail)),
                           "sigma_without_consensus": _sigma(m[:, :, j], ~odd),
                           "sigma_without_consensus_ci95": _bootstrap(m[:, :, j], ~odd, n_boot, rng)}
        stars = [{"id": ids[i], **(catalogue or {}).get(ids[i], {}),
                  "literature": {n: float(truth[i, k]) for k, n in enumerate(LABEL_NAMES)},
                  "miss": {name: float(seed_mean[name][i]) for name in rows}} for i in np.flatnonzero(odd)]
        labels[label] = {"rows": stats, "consensus": stars,
                         "misses": {name: [None if not np.isfinite(v) else round(float(v), 4) for v in m]
                                    for name, m in seed_mean.items()}}
    return {"rows": list(rows), "clip": CLIP, "n_dwarfs": len(ids), "n_seeds": {n: int(m.shape[0])
                                                                              for n, m in per_row.items()},
            "labels": labels}


def read_tail(path=REPORT) -> dict:
    """The committed report (``results/study_tail.json``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tail report; run `python -m remap_lib.evaluation.studytail`")
    return json.loads(path.read_text(encoding="utf-8"))


def summary_frame(report: dict, label: str = "teff") -> pd.DataFrame:
    """Per row: σ (every star), robust σ, the tail's size and σ without the consensus outliers [95 %]."""
    out = {}
    for name, st in report["labels"][label]["rows"].items():
        lo, hi = st["sigma_without_consensus_ci95"]
        out[name] = {"σ": st["sigma"], "robust σ": st["robust_sigma"],
                     f"beyond {report['clip']:g} robust σ (per seed)": st["n_tail"],
                     "σ without consensus outliers": st["sigma_without_consensus"], "95 % lo": lo, "95 % hi": hi}
    return pd.DataFrame.from_dict(out, orient="index")


def consensus_frame(report: dict, label: str = "teff") -> pd.DataFrame:
    """The consensus outliers of ``label``: MILES name, spectral type, literature labels, each row's miss."""
    rows = []
    for star in report["labels"][label]["consensus"]:
        rows.append({"id": star["id"], "name": star.get("name", ""), "type": star.get("sptype", ""),
                     **{f"literature {n}": v for n, v in star["literature"].items()},
                     **{f"miss: {name}": v for name, v in star["miss"].items()}})
    return pd.DataFrame(rows).set_index("id") if rows else pd.DataFrame()


def plot_tail(report: dict, label: str = "teff", goal: float | None = None, ax=None):
    """Share of the dwarfs each row misses by more than x (seed-mean |miss|), log scale: the tail at a glance."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    for name, misses in report["labels"][label]["misses"].items():
        m = np.sort(np.abs(np.array([np.nan if v is None else v for v in misses], dtype=float)))
        m = m[np.isfinite(m)]
        ax.step(m, 1.0 - np.arange(1, m.size + 1) / m.size, where="post", label=name)
    if goal is not None:
        ax.axvline(goal, color="0.4", ls=":", label=f"goal σ {goal:g}")
    unit = "K" if label == "teff" else "dex"
    ax.set(yscale="log", xlabel=f"|predicted − literature| {label} ({unit})", ylabel="share of dwarfs missed by more",
           ylim=(0.5 / len(m), 1.0))
    ax.legend(fontsize=7, loc="upper right")  # the tail runs along the bottom
    return ax


def miles_catalogue() -> dict:
    """MILES id ('m0330') -> name and spectral type, from the catalogue remap reads."""
    from remap_lib.data.sources.miles import load_miles

    lib = load_miles()
    return {f"m{int(i):04d}": {"name": str(n), "sptype": str(s)} for i, n, s in zip(lib.ids, lib.names, lib.sptype,
                                                                                   strict=True)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m remap_lib.evaluation.studytail",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, default=STUDY_OUT, help="study folder (its runs and folds.csv)")
    parser.add_argument("--out", type=Path, default=REPORT, help="report (JSON)")
    args = parser.parse_args(argv)
    report = tail_report(load_records(args.study), read_folds(args.study / "folds.csv"), miles_catalogue())
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
