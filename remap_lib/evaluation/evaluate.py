"""Predictions and the numbers we judge them by: bias, scatter (σ) and MAD per label."""

from __future__ import annotations

import numpy as np
import torch

from remap_lib.constants import GIANT_LOGG, LABEL_NAMES
from remap_lib.evaluation.forward import forward
from remap_lib.nn.binning import DEFAULT_BINS


def add_noise(flux, mask, snr: float, seed: int = 0):
    """Gaussian noise of σ = 1/snr on normalized flux, reproducible from ``seed``; masked pixels stay 1."""
    rng = np.random.default_rng(seed)
    flux = np.asarray(flux, dtype=np.float32)
    noisy = flux + rng.standard_normal(flux.shape).astype(np.float32) / np.float32(snr)
    return np.where(mask, 1.0, noisy).astype(np.float32), np.asarray(mask, dtype=bool)


@torch.no_grad()
def predict(model, flux, mask=None, bins=None, label_stats=None, device="cpu", batch_size: int = 256,
            return_pmf: bool = False, return_embedding: bool = False) -> dict:
    """Run ``model`` over spectra; per label a dict of point estimates and intervals.

    Classification heads give the decoded PMF (mean, std, median, mode, p16, p84, p2_5, p97_5;
    ``pmf`` too if asked). The regression baseline gives its value as every estimate.
    """
    bins = dict(bins or DEFAULT_BINS)
    out = forward(model, flux, mask, batch_size, device)
    result = {}
    for j, name in enumerate(LABEL_NAMES):
        z = out["logits"][name].numpy()
        if model.config.head == "regression":
            if label_stats is None:
                raise ValueError("a regression model needs label_stats (mean, std) to give labels in physical units")
            value = z * label_stats[1][j] + label_stats[0][j]
            result[name] = {k: value for k in ("mean", "median", "mode", "p16", "p84", "p2_5", "p97_5")}
            result[name]["std"] = np.full_like(value, np.nan)
        else:
            pmf = torch.softmax(torch.as_tensor(z), dim=-1).numpy()
            result[name] = bins[name].decode(pmf)
            if return_pmf:
                result[name]["pmf"] = pmf
    if return_embedding:
        result["embedding"] = out["embedding"].numpy()
    return result


def point_predictions(values) -> dict[str, dict[str, np.ndarray]]:
    """``{label: {"median": column}}`` of an (n, 3) array of point estimates (a peer's labels), the
    shape :func:`scatter_metrics` and :func:`score_row` read."""
    values = np.asarray(values)
    return {name: {"median": values[:, j]} for j, name in enumerate(LABEL_NAMES)}


def scatter_metrics(pred: dict, truth: np.ndarray, estimate: str = "median") -> dict[str, dict[str, float]]:
    """Bias (mean error), σ (standard deviation of the error) and MAD (median absolute deviation
    of the error about its median) per label. Rows with unknown truth are skipped; rows with no
    prediction (NaN) are skipped too and counted in ``n_failed`` so they cannot flatter σ."""
    out = {}
    for j, name in enumerate(LABEL_NAMES):
        t, p = np.asarray(truth)[:, j], np.asarray(pred[name][estimate])
        err = (p - t)[np.isfinite(t) & np.isfinite(p)]
        out[name] = {"bias": float(err.mean()), "sigma": float(err.std()),
                     "mad": float(np.median(np.abs(err - np.median(err)))), "n": int(err.size),
                     "n_failed": int(np.sum(np.isfinite(t) & ~np.isfinite(p)))}
    return out


def interval_coverage(pred: dict, truth: np.ndarray) -> dict[str, dict[str, float]]:
    """Fraction of true labels inside the 68 % (p16-p84) and 95 % (p2.5-p97.5) intervals."""
    out = {}
    for j, name in enumerate(LABEL_NAMES):
        t = np.asarray(truth)[:, j]
        ok = np.isfinite(t)
        p = {k: np.asarray(v)[ok] for k, v in pred[name].items() if k != "pmf"}
        out[name] = {"68": float(np.mean((t[ok] >= p["p16"]) & (t[ok] <= p["p84"]))),
                     "95": float(np.mean((t[ok] >= p["p2_5"]) & (t[ok] <= p["p97_5"])))}
    return out


def snr_table(model, data, snrs=(20.0, 50.0, 100.0), bins=None, label_stats=None, seed: int = 0,
              device="cpu"):
    """Bias, σ and MAD per label on ``data`` (a SpectraSet) with Gaussian noise at each S/N.

    Returns a pandas DataFrame with one row per (S/N, label). The noise is reproducible from ``seed``.
    """
    import pandas as pd

    rows = []
    for k, snr in enumerate(snrs):
        flux, mask = add_noise(data.flux, data.mask, snr, seed + k)
        pred = predict(model, flux, mask, bins, label_stats=label_stats, device=device)
        for name, m in scatter_metrics(pred, data.labels).items():
            rows.append({"snr": snr, "label": name, **m})
    return pd.DataFrame(rows)


def score_row(method: str, pred: dict, truth: np.ndarray, bins=None) -> dict:
    """One row of a comparison table: σ and bias per label, plus, where ``pred`` carries PMFs,
    the interval ECE and the 68 % coverage (:mod:`remap_lib.evaluation.calibrate`) per label."""
    from remap_lib.evaluation import calibrate

    bins = dict(bins or DEFAULT_BINS)
    stats = scatter_metrics(pred, truth)
    row = {"method": method, **{f"sigma_{n}": stats[n]["sigma"] for n in LABEL_NAMES},
           **{f"bias_{n}": stats[n]["bias"] for n in LABEL_NAMES}}
    for j, n in enumerate(LABEL_NAMES):
        if "pmf" in pred[n]:
            row[f"ece_{n}"] = calibrate.interval_ece(pred[n]["pmf"], truth[:, j], bins[n])
            row[f"cov68_{n}"] = calibrate.coverage(pred[n]["pmf"], truth[:, j], bins[n], 0.68)
    return row


def giant_dwarf_split(pred: dict, truth: np.ndarray, bins=None, logg_boundary: float = GIANT_LOGG) -> dict:
    """Classify stars as giant/subgiant (predicted median log g below ``logg_boundary``) or dwarf.

    Returns the per-star ``called_giant`` and ``p_giant`` (PMF mass below the boundary, when PMFs are
    present), and against the literature ``truth``: the fraction called giant, the classification
    accuracy and the scatter per label.
    """
    bins = dict(bins or DEFAULT_BINS)
    called = np.asarray(pred["logg"]["median"]) < logg_boundary
    truly = np.asarray(truth)[:, 1] < logg_boundary
    out = {"n": int(len(called)), "fraction_called_giant": float(called.mean()),
           "accuracy": float((called == truly).mean()), "scatter": scatter_metrics(pred, truth),
           "called_giant": called}
    if "pmf" in pred["logg"]:
        p_giant = (np.asarray(pred["logg"]["pmf"]) * (bins["logg"].centers < logg_boundary)).sum(axis=1)
        out["p_giant"], out["mean_p_giant"] = p_giant, float(p_giant.mean())
    return out
