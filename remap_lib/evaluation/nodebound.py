"""How well could any method do on the grid's held-out nodes? Their Cramér–Rao bounds at a given S/N.

Issue 12 asks for σ ≤ 60 K / 0.12 / 0.06 dex on the synthetic grid's held-out nodes at S/N 50. How much
of that is the network's to win? For a spectrum f(θ) with independent Gaussian noise σ = 1/(S/N) per
pixel, the Fisher information about the labels θ is F = Jᵀ J / σ², with J = ∂f/∂θ, and no unbiased
estimator has a variance below (F⁻¹)ᵢᵢ (Cramér 1946; Rao 1945). Per held-out node:

* J from the grid itself: central differences between the node's lattice neighbours along each label
  (one-sided at the grid's edges), over the whole grid (training, validation and test nodes alike: the
  bound is a property of the spectra, not of a training set); a node without a neighbour along some label
  gets no bound;
* **with nuisances** (the reported bound): the continuum's scale and slope and the radial velocity join θ,
  since augmentation teaches the network to ignore them and it cannot then learn them from the spectrum;
  marginalizing them can only raise the bound.

The bound is local (derivatives over one grid step) and holds for unbiased estimators; a network that
shrinks towards the labels it has seen (a prior) can do better on some nodes and worse on others.
So the bounds say which nodes carry the information, not a hard floor on the network's σ.

    python -m remap_lib.evaluation.nodebound [--profile default] [--model M] [--out results/node_bound.json]

scores the shipped pretrained network on the same nodes and noise as the study's pretraining records
(:func:`remap_lib.evaluation.studyruns.held_out_node_predictions`) and reports both. It also gives the bound
at the literature labels of the MILES dwarfs and giants (:func:`star_bounds`: the nearest grid node's,
as if each star were the grid's spectrum), and the S/N per pixel at which its rms meets issue 12's σ
goals for them. At S/N, not at each star's S/N: DER_SNR, the only noise estimate MILES allows, reads
the line structure of a 2.5 Å spectrum on 0.9 Å pixels as noise (noise-free grid spectra read S/N ≈ 60),
so it cannot say how noisy a MILES star is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import norm, spearmanr

from remap_lib.constants import C_KMS, GIANT_LOGG, LABEL_NAMES
from remap_lib.data.dataset import SpectraSet, read_dataset
from remap_lib.data.pretrained import find_pretrained
from remap_lib.data.splits import DEFAULT_SPLITS, read_splits
from remap_lib.evaluation.studynodes import N_BOOT
from remap_lib.evaluation.studyreport import GOAL_NODE_SIGMA, GOAL_SIGMA
from remap_lib.evaluation.studyruns import SYNTHETIC_SNR, held_out_node_predictions
from remap_lib.evaluation.studystats import _part_array
from remap_lib.fileio import write_json
from remap_lib.nn.modelfile import load_model
from remap_lib.paths import RESULTS_DIR, work_dir
from remap_lib.training.nodemix import Lattice
from remap_lib.training.trainsets import der_snr_noise, nearest_by_labels

#: The nuisances marginalized in the reported bound: continuum scale, continuum slope, radial velocity.
NUISANCES = ("continuum scale", "continuum slope", "radial velocity")
#: A node "in the tail" of the bound: its Teff bound exceeds issue 12's σ goal at S/N 50.
TAIL_TEFF = GOAL_NODE_SIGMA["teff"]
#: The hot edge's nodes: the grid's hottest dwarfs at least this metal-rich ([M/H], dex), like most MILES
#: stars just beyond the edge.
HOT_EDGE_MIN_METALLICITY = -0.5
#: Detecting 95 % of the stars beyond an edge while flagging at most 5 % inside it: 1.645 bounds each side.
ONE_SIDED_95 = float(norm.ppf(0.95))
REPORT_FILE = RESULTS_DIR / "node_bound.json"


def label_jacobian(grid: SpectraSet, row: int, lattice: Lattice | None = None) -> np.ndarray | None:
    """∂flux/∂label (3, npix) at grid node ``row`` from its lattice neighbours, or None at a missing one."""
    lattice = lattice or Lattice(grid.labels)
    labels = np.asarray(grid.labels, dtype=np.float64)
    rows = []
    for j in range(labels.shape[1]):
        up, down = (lattice.at(row, [step if i == j else 0 for i in range(labels.shape[1])]) for step in (1, -1))
        up, down = (row if up is None else up), (row if down is None else down)  # one-sided at an edge
        if up == down:  # no neighbour on either side
            return None
        rows.append((np.asarray(grid.flux[up], dtype=np.float64) - grid.flux[down]) / (labels[up, j] - labels[down, j]))
    return np.array(rows)


def _nuisance_jacobian(wave: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """∂flux/∂(continuum scale, continuum slope, RV in km/s) at scale 1, slope 0, RV 0: (3, npix)."""
    x = (wave - wave.mean()) / (0.5 * (wave.max() - wave.min()))
    return np.array([flux, flux * x, -np.gradient(flux, wave) * wave / C_KMS])


def node_bounds(grid: SpectraSet, rows, snr: float, nuisances: bool = True) -> np.ndarray:
    """Cramér–Rao bounds (n, 3) on Teff, log g and [Fe/H] of grid nodes ``rows`` at S/N ``snr`` per pixel.

    Masked pixels carry no information. NaN for a node without lattice neighbours along every label.
    """
    out = np.full((len(rows), len(LABEL_NAMES)), np.nan)
    lattice = Lattice(grid.labels)
    for n, row in enumerate(rows):
        jac = label_jacobian(grid, int(row), lattice)
        if jac is None:
            continue
        use = ~np.asarray(grid.mask[row], dtype=bool)
        if nuisances:
            extra = _nuisance_jacobian(np.asarray(grid.wave, float), np.asarray(grid.flux[row], float))
            # a nuisance the spectrum does not respond to (RV of a line-free spectrum) is no nuisance
            jac = np.vstack([jac, extra[np.abs(extra[:, use]).max(axis=1) > 0]])
        fisher = snr**2 * jac[:, use] @ jac[:, use].T
        try:
            variance = np.diag(np.linalg.inv(fisher))[: len(LABEL_NAMES)]
        except np.linalg.LinAlgError:  # labels the spectrum cannot tell apart: no finite bound
            continue
        out[n] = np.where(variance > 0, np.sqrt(np.abs(variance)), np.nan)
    return out


def star_bounds(grid: SpectraSet, labels, snr: float = SYNTHETIC_SNR) -> np.ndarray:
    """Bounds (n, 3) at S/N ``snr`` for stars of literature ``labels`` (n, 3): those of each one's nearest
    grid node (in label scales, :func:`~remap_lib.training.trainsets.nearest_by_labels`)."""
    near = nearest_by_labels(np.asarray(labels, dtype=np.float64), np.asarray(grid.labels, dtype=np.float64))
    nodes, back = np.unique(near, return_inverse=True)
    return node_bounds(grid, nodes, snr)[back]


def miles_summary(grid: SpectraSet, groups: dict[str, np.ndarray], goals: dict[str, dict],
                  snr: float = SYNTHETIC_SNR) -> dict:
    """Per group of MILES labels (name -> (n, 3)): rms and median bound at ``snr``, and the S/N per pixel at
    which the rms bound meets that group's σ goal (the bound scales as 1/(S/N))."""
    out = {}
    for name, labels in groups.items():
        b = star_bounds(grid, labels, snr)
        rms = np.sqrt(np.nanmean(b**2, axis=0))
        out[name] = {"stars": len(labels), "with_bound": int(np.isfinite(b).all(axis=1).sum()), "snr": snr,
                     **{n: {"rms": float(rms[j]), "median": float(np.nanmedian(b[:, j])),
                            "goal": goals[name][n], "snr_for_rms_at_goal": float(snr * rms[j] / goals[name][n])}
                        for j, n in enumerate(LABEL_NAMES)}}
    return out


def hot_edge(grid: SpectraSet, snr: float = SYNTHETIC_SNR) -> dict:
    """The Teff bound of the grid's hottest dwarfs (log g ≥ 3.5, [M/H] ≥ :data:`HOT_EDGE_MIN_METALLICITY`), at
    the FGK box's hot edge: how far past it a star must be before its spectrum can tell (the out-of-domain goal)."""
    labels = np.asarray(grid.labels)
    rows = np.flatnonzero((labels[:, 0] == labels[:, 0].max()) & (labels[:, 1] >= GIANT_LOGG)
                          & (labels[:, 2] >= HOT_EDGE_MIN_METALLICITY))
    b = node_bounds(grid, rows, snr)[:, 0]
    return {"teff": float(labels[:, 0].max()), "nodes": len(rows), "snr": snr, "median": float(np.nanmedian(b)),
            "p10": float(np.nanpercentile(b, 10)), "p90": float(np.nanpercentile(b, 90)),
            "separation_for_95_and_5_percent": float(2 * ONE_SIDED_95 * np.nanmedian(b))}


def _node_intervals(error: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """95 % percentile bootstrap intervals over nodes of σ and MAD of ``error`` (one network, so nodes only)."""
    idx = np.random.default_rng(seed).integers(0, len(error), size=(n_boot, len(error)))
    sample = error[idx]
    sigma = np.std(sample, axis=1)
    mad = np.median(np.abs(sample - np.median(sample, axis=1, keepdims=True)), axis=1)
    return {"sigma_ci95": [float(v) for v in np.percentile(sigma, [2.5, 97.5])],
            "mad_ci95": [float(v) for v in np.percentile(mad, [2.5, 97.5])]}


def measure(model_path, grid: SpectraSet) -> dict:
    """Bounds on the grid's held-out nodes at the study's S/N, the network's errors on them (the study's noise,
    :func:`~remap_lib.evaluation.studyruns.held_out_node_predictions`), and how the two relate."""
    snr = SYNTHETIC_SNR
    rows = np.flatnonzero(np.asarray(grid.meta["split"]) == "test")
    bounds = {"labels only": node_bounds(grid, rows, snr, nuisances=False),
              "with nuisances": node_bounds(grid, rows, snr)}
    model = load_model(model_path)[0].eval()
    ids, truth, pred = _part_array(held_out_node_predictions(model, grid)["synthetic_test"])
    if list(ids) != [str(i) for i in grid.ids[rows]]:
        raise ValueError("the held-out node predictions are not in the grid's order of its test nodes")
    error = pred[:, :, 0] - truth
    bound = bounds["with nuisances"]
    ok = np.isfinite(bound).all(axis=1)
    tail = ok & (bound[:, 0] > TAIL_TEFF)
    result = {"snr": snr, "nodes": len(rows), "nodes_with_bound": int(ok.sum()), "nuisances": list(NUISANCES),
              "bound": {}, "network": {}, "relation": {}}
    for kind, b in bounds.items():
        result["bound"][kind] = {n: {"rms": float(np.sqrt(np.nanmean(b[:, j] ** 2))),
                                     "median": float(np.nanmedian(b[:, j]))} for j, n in enumerate(LABEL_NAMES)}
    for j, n in enumerate(LABEL_NAMES):
        every = error[:, j]  # the network's σ and MAD on every node, as the study scores it
        result["network"][n] = {"sigma": float(np.std(every)),
                                "mad": float(np.median(np.abs(every - np.median(every)))), **_node_intervals(every)}
        e = error[ok, j]
        # a rank correlation needs values that differ (an untrained network's errors may not)
        rho = spearmanr(np.abs(e), bound[ok, j]) if min(np.ptp(np.abs(e)), np.ptp(bound[ok, j])) > 0 else None
        result["relation"][n] = {
            "spearman_abs_error_vs_bound": None if rho is None else float(rho.statistic),
            "p_value": None if rho is None else float(rho.pvalue),
            # the share of the network's squared error (on nodes with a bound) whose Teff bound exceeds TAIL_TEFF
            "share_of_squared_error_in_bound_tail": float(np.sum(error[tail, j] ** 2) / np.sum(e**2)),
        }
    result["bound_tail"] = {"teff_above_K": TAIL_TEFF, "nodes": int(tail.sum()),
                            "network_sigma_outside": {n: float(np.std(error[ok & ~tail, j])) if (ok & ~tail).sum() > 1
                                                      else None for j, n in enumerate(LABEL_NAMES)}}
    result["snr_for_rms_bound_at_goal"] = {  # the bound scales as 1/(S/N)
        n: float(snr * result["bound"]["with nuisances"][n]["rms"] / GOAL_NODE_SIGMA[n]) for n in LABEL_NAMES}
    result["per_node"] = {"id": [str(i) for i in ids], "truth": truth.tolist(), "error": error.tolist(),
                          "bound": bound.tolist()}
    return result


def read_report(path=REPORT_FILE) -> dict | None:
    """The report ``python -m remap_lib.evaluation.nodebound`` writes, or None where there is none."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--model", default=None, help="a pretrained network (default: the profile's shipped one)")
    parser.add_argument("--out", default=str(REPORT_FILE))
    args = parser.parse_args(argv)
    model = Path(args.model) if args.model else find_pretrained(args.profile, "deep-remap").path
    grid = read_dataset(work_dir(args.profile) / "synthetic.h5")
    miles = read_dataset(work_dir(args.profile) / "miles.h5")
    role = read_splits(DEFAULT_SPLITS).set_index("id")["role"].reindex(miles.ids).to_numpy()
    groups = {"cv_dwarfs": miles.labels[np.isin(role, ("finetune", "validation", "calibration"))],
              "calibration_stars": miles.labels[role == "calibration"],
              "giants": miles.labels[role == "giant_candidate"]}
    # what DER_SNR makes of spectra without noise: the line structure it reads as noise
    read = 1.0 / der_snr_noise(np.where(grid.mask, np.nan, grid.flux))
    result = {"model": model.name, "grid": grid.provenance.get("source", "synthetic grid"),
              **measure(model, grid), "miles": miles_summary(grid, groups, GOAL_SIGMA),
              "hot_edge": hot_edge(grid),
              "der_snr_of_noise_free_grid": {"median": float(np.median(read)),
                                             "p10": float(np.percentile(read, 10)),
                                             "p90": float(np.percentile(read, 90))}}
    write_json(args.out, result)
    b, net, snr = result["bound"]["with nuisances"], result["network"], result["snr"]
    print(f"{result['nodes_with_bound']} of {result['nodes']} held-out nodes at S/N {snr:g}; rms bound "
          + " / ".join(f"{b[n]['rms']:.3g}" for n in LABEL_NAMES) + "; median bound "
          + " / ".join(f"{b[n]['median']:.3g}" for n in LABEL_NAMES) + "; network σ "
          + " / ".join(f"{net[n]['sigma']:.3g}" for n in LABEL_NAMES))
    edge = result["hot_edge"]
    print(f"hot edge ({edge['teff']:g} K dwarfs): median Teff bound {edge['median']:.0f} K at S/N {snr:g}")
    for name, m in result["miles"].items():
        print(f"MILES {name} ({m['stars']}): rms bound at S/N {snr:g} "
              + " / ".join(f"{m[n]['rms']:.3g}" for n in LABEL_NAMES) + "; S/N for the rms bound at the goal "
              + " / ".join(f"{m[n]['snr_for_rms_at_goal']:.0f}" for n in LABEL_NAMES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
