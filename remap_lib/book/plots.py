"""Figures the notebooks share: learning curves, confusion matrices, PMFs, parity plots."""

from __future__ import annotations

import csv

import matplotlib.pyplot as plt
import numpy as np

from remap_lib.constants import LABEL_NAMES
from remap_lib.nn.binning import LabelBins

LABEL_TEX = {"teff": r"$T_\mathrm{eff}$ [K]", "logg": r"$\log g$ [dex]", "feh": "[Fe/H] [dex]"}


def read_metrics(path) -> dict[str, np.ndarray]:
    """The per-epoch metrics log written by :class:`remap_lib.training.train.Trainer`, column by column."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows]) for k in rows[0]}


def learning_curves(metrics: dict, axes=None):
    """Training loss per head (left) and validation scatter per label at S/N 50 (right three)."""
    if axes is None:
        _, axes = plt.subplots(1, 4, figsize=(14, 3.3), constrained_layout=True)
    epoch = metrics["epoch"]
    for key in [k for k in metrics if k.startswith("train_")]:
        axes[0].plot(epoch, metrics[key], label=key.removeprefix("train_"))
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("training loss")
    axes[0].legend(fontsize=8)
    for ax, name in zip(axes[1:], LABEL_NAMES, strict=True):
        key = f"val_sigma_{name}"
        if key in metrics:
            ax.plot(epoch, metrics[key], color="C3")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation σ, {LABEL_TEX[name]}")
        ax.set_yscale("log")
    return axes


def confusion(ax, truth, predicted, bins: LabelBins, title: str = ""):
    """2-D histogram of predicted against true label on the head's own bins, normalized per true bin."""
    e = bins.edges_array
    hist, _, _ = np.histogram2d(truth, predicted, bins=[e, e])
    with np.errstate(invalid="ignore"):
        hist = hist / hist.sum(axis=1, keepdims=True)
    im = ax.pcolormesh(e, e, np.nan_to_num(hist).T, cmap="Greys", vmin=0, vmax=1)
    ax.plot(e[[0, -1]], e[[0, -1]], color="C3", lw=0.8)
    lo, hi = np.nanmin(truth) - 2 * bins.widths[0], np.nanmax(truth) + 2 * bins.widths[0]
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"true {LABEL_TEX[bins.name]}")
    ax.set_ylabel(f"predicted {LABEL_TEX[bins.name]}")
    ax.set_title(title)
    return im


def pmf(ax, probabilities, bins: LabelBins, summary: dict, index: int, truth=None):
    """One PMF as bars, with its median, 68 % and 95 % intervals and (if known) the true value."""
    ax.bar(bins.centers, probabilities, width=bins.widths, color="0.7", edgecolor="0.4", lw=0.3)
    ax.axvspan(summary["p2_5"][index], summary["p97_5"][index], color="C0", alpha=0.12, label="95 %")
    ax.axvspan(summary["p16"][index], summary["p84"][index], color="C0", alpha=0.25, label="68 %")
    ax.axvline(summary["median"][index], color="C0", label="median")
    if truth is not None:
        ax.axvline(truth, color="C3", ls="--", label="true")
    ax.set_xlabel(LABEL_TEX[bins.name])
    ax.set_ylabel("probability")
    return ax


def error_against_bound(axes, bound, error, goal: dict | None = None):
    """Per label (one axis each): every node's |error| against its Cramér–Rao bound, log-log, with the line
    |error| = bound (grey) and, if given, the goal per label (dashed, both axes)."""
    bound, error = np.asarray(bound, dtype=float), np.abs(np.asarray(error, dtype=float))
    for ax, (j, name) in zip(axes, enumerate(LABEL_NAMES), strict=True):
        ok = np.isfinite(bound[:, j]) & np.isfinite(error[:, j])
        if not ok.any():  # a grid too sparse for lattice neighbours (the smoke profile's) has no bounds
            ax.text(0.5, 0.5, "no node with a bound", ha="center", va="center", transform=ax.transAxes)
            continue
        # errors below a third of the smallest bound (0 included, which log axes cannot show) sit at that floor
        floor = np.nanmin(bound[ok, j]) / 3
        ax.scatter(bound[ok, j], np.maximum(error[ok, j], floor), s=9, alpha=0.7)
        lo, hi = floor, max(np.nanmax(bound[ok, j]), np.nanmax(error[ok, j])) * 1.5
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, label="|error| = bound")
        if goal is not None:
            ax.axvline(goal[name], color="C3", ls="--", lw=0.8, label="goal σ")
            ax.axhline(goal[name], color="C3", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"Cramér–Rao bound, {LABEL_TEX[name]}")
        ax.set_ylabel(f"|network − truth|, {LABEL_TEX[name]}")
    return axes
