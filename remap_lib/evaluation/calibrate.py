"""Temperature scaling (Guo et al. 2017) per head, and calibration metrics for ordinal PMFs.

Temperature scaling divides a head's logits by one scalar T > 0 fitted on held-out data; it changes
how sharp each PMF is but never which bin is most probable, so point estimates like the mode are
untouched. Two fits: by minimizing the cross-entropy (:func:`fit_temperatures`, Guo et al.'s, per
member), or by matching the ensemble's interval coverage to the nominal levels
(:func:`fit_coverage_temperatures`, one T per head shared by the members), which fits the quantity
the book reports.

Two calibration metrics, because regression-as-classification has ordered bins:

* **top-label ECE** (the classification standard). Confidence c = max_k p_k; the prediction is
  "correct" when the true value lies in the argmax bin. Rows are grouped into ``n_bins`` equal-width
  confidence intervals (0, 1/B], ..., ((B-1)/B, 1] and ECE = Σ_b (n_b / N) |accuracy_b − confidence_b|.
  It ignores how far off a miss is: a neighbouring bin and the far end of the range count the same.
* **interval ECE** (suited to ordered bins). For each level q the central credible interval is
  [Q((1−q)/2), Q((1+q)/2)], Q the quantile function of the PMF with mass uniform inside each bin
  (the linear CDF interpolation of :meth:`LabelBins.decode`). coverage(q) is the fraction of true
  values inside it, and ECE_interval = mean_q |coverage(q) − q| over q ∈ {0.1, ..., 0.9}. A
  calibrated model has coverage(q) = q at every level; over-confidence shows as coverage < q.

Rows whose PMF has zero mass or whose truth is NaN carry no information and are skipped everywhere.
True values outside the binned range are clipped to the outermost bin centre, as the training
targets are (:meth:`LabelBins.soft_targets`): the model cannot put mass beyond the range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from remap_lib.constants import LABEL_NAMES
from remap_lib.evaluation.forward import forward
from remap_lib.nn.binning import LabelBins

# Bounds for T: outside them the fit is surely fighting a bug (wrong targets), not miscalibration.
T_MIN, T_MAX = 0.05, 20.0
DEFAULT_LEVELS = tuple(np.round(np.arange(1, 10) / 10, 10))  # 0.1 ... 0.9


# -- logits and temperatures ---------------------------------------------------------------------
def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


@torch.no_grad()
def collect_logits(model, flux, mask=None, batch_size: int = 256, device="cpu") -> dict[str, np.ndarray]:
    """Raw logits of every head over ``flux`` (n, npix): ``{label: (n, nbins)}`` float64 arrays."""
    logits = forward(model, flux, mask, batch_size, device)["logits"]
    return {name: z.double().numpy() for name, z in logits.items()}


def _prepare(logits, targets) -> tuple[np.ndarray, np.ndarray]:
    """Logits and row-normalized targets of the rows with target mass.

    ``targets``: (n, K) soft or one-hot masses, or (n,) integer bin indices (negative = unknown).
    Targets are renormalized because each is a distribution: its scale must not weight its row.
    """
    z = _numpy(logits)
    if z.ndim != 2:
        raise ValueError(f"logits must be (n, K), got {z.shape}")
    raw = targets.detach().cpu().numpy() if hasattr(targets, "detach") else np.asarray(targets)
    if raw.ndim == 1:
        idx = raw.astype(np.int64)
        t = np.zeros((idx.size, z.shape[1]))
        ok = idx >= 0
        t[np.flatnonzero(ok), idx[ok]] = 1.0
    elif raw.ndim == 2 and raw.shape[1] == z.shape[1]:
        t = raw.astype(np.float64)
    else:
        raise ValueError(f"targets must be (n,) bin indices or (n, {z.shape[1]}) masses, got {raw.shape}")
    if len(t) != len(z):
        raise ValueError(f"{len(z)} logit rows but {len(t)} target rows")
    tot = t.sum(axis=1)
    keep = tot > 0
    return z[keep], t[keep] / tot[keep, None]


def temperature_nll(logits, targets, T: float) -> float:
    """Mean over rows with target mass of −Σ_k t_k log softmax(z / T)_k."""
    z, t = _prepare(logits, targets)
    return float(-(t * log_softmax(z / T, axis=1)).sum(axis=1).mean())


def fit_temperature(logits, targets, max_iter: int = 200, bounds=(T_MIN, T_MAX)) -> float:
    """The T minimizing :func:`temperature_nll` on (n, K) ``logits``.

    ``targets``: (n, K) soft or one-hot masses, or (n,) integer bin indices. Rows with zero target
    mass (unknown label, index < 0) are ignored. The search is bounded Brent over log T in
    [log bounds[0], log bounds[1]]: working in log T keeps T > 0, and the NLL is convex in 1/T, so
    it has a single minimum on the range.
    """
    z, t = _prepare(logits, targets)
    if len(z) == 0:
        raise ValueError("no row has target mass: nothing to fit a temperature on")

    def nll(log_t):
        return float(-(t * log_softmax(z / np.exp(log_t), axis=1)).sum(axis=1).mean())

    res = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-5, "maxiter": max_iter})
    return float(np.exp(res.x))


def fit_temperatures(logits: Mapping[str, np.ndarray], labels, bins: Mapping[str, LabelBins],
                     label_sigma=None, **kw) -> dict[str, float]:
    """One temperature per head from (n, 3) ``labels`` (columns in LABEL_NAMES order; NaN = unknown).

    ``label_sigma`` is None (one-hot targets at the true bin), or per label a scalar / (n,) array,
    given as a mapping ``{label: sigma}`` or a sequence in LABEL_NAMES order: the targets are then
    ``bins[label].soft_targets(values, sigma)``, as in training with label uncertainties.
    """
    lab = np.asarray(labels, dtype=np.float64)
    out = {}
    for j, name in enumerate(LABEL_NAMES):
        if name not in logits:
            continue
        if label_sigma is None:
            sigma = None
        elif isinstance(label_sigma, Mapping):
            sigma = label_sigma.get(name)
        else:
            sigma = label_sigma[j]
        targets = bins[name].soft_targets(lab[:, j], sigma)
        out[name] = fit_temperature(logits[name], targets, **kw)
    return out


#: Candidate temperatures for the coverage fit: log-spaced over the allowed range, 1 % apart.
COVERAGE_GRID = np.geomspace(T_MIN, T_MAX, 603)


def fit_coverage_temperature(member_logits: Sequence, truth, bins: LabelBins,
                             levels: Sequence[float] = DEFAULT_LEVELS, grid=COVERAGE_GRID,
                             recentre: bool = False) -> float:
    """The T, shared by an ensemble's members, whose central intervals cover ``truth`` at their nominal rate.

    Fits what the book reports rather than a likelihood: the ensemble PMF is
    mean_m softmax(z_m / T) (as :func:`remap_lib.training.transfer.ensemble_pmfs` makes it) and T minimizes
    its :func:`interval_ece` against ``truth`` over ``levels``. Fitting the coverage of the labels as
    they are (literature values) avoids counting their noise twice, as NLL on soft targets does.
    Coverage is a step function of T, so the search is exhaustive over ``grid``; of the tied
    minimizers the geometric middle is returned (the same answer on every machine).

    ``recentre``: score the intervals as ``predict`` reads a widened PMF, moved onto the median of the
    unwidened (T = 1) PMF (:func:`remap_lib.prediction.widening.recentre`).
    """
    zs = [_numpy(z) for z in member_logits]
    if not zs:
        raise ValueError("no member logits: nothing to fit a temperature on")
    truth = _numpy(truth)
    known = np.isfinite(truth)
    if not known.any():
        raise ValueError(f"{bins.name}: no known label: nothing to fit a temperature on")
    centre = None
    if recentre:
        centre = bins.quantiles(np.mean([softmax(z[known], axis=1) for z in zs], axis=0), [0.5])[:, 0]
    eces = np.array([interval_ece(np.mean([softmax(z[known] / t, axis=1) for z in zs], axis=0), truth[known], bins,
                                  levels, centre) for t in grid])
    best = np.flatnonzero(eces <= eces.min() + 1e-12)
    return float(np.sqrt(grid[best[0]] * grid[best[-1]]))


def fit_coverage_temperatures(member_logits: Sequence[Mapping[str, np.ndarray]], labels,
                              bins: Mapping[str, LabelBins], **kw) -> dict[str, float]:
    """One coverage temperature per head (see :func:`fit_coverage_temperature`), shared by the members."""
    lab = np.asarray(labels, dtype=np.float64)
    return {name: fit_coverage_temperature([z[name] for z in member_logits], lab[:, j], bins[name], **kw)
            for j, name in enumerate(LABEL_NAMES) if name in member_logits[0]}


def apply_temperature(logits, T: float) -> np.ndarray:
    """softmax(z / T) along the last axis, as float64 numpy."""
    return softmax(_numpy(logits) / float(T), axis=-1)


class TemperatureScaledModel(torch.nn.Module):
    """A DeepREMAP whose classification logits are divided by a per-head temperature.

    ``forward`` returns the wrapped model's structure, ``{"logits": {label: z / T}, "embedding": e}``,
    so :func:`remap_lib.evaluation.evaluate.predict` and :func:`collect_logits` take it unchanged (``config`` is
    forwarded). The temperatures live in the buffer ``temperature`` (one entry per head, in
    ``head_names`` order), so ``state_dict()`` holds them next to the weights (keys ``model.*`` and
    ``temperature``). To keep the standard model file format, save the inner network and the plain
    floats: ``save_model(path, scaled.model, ..., extra={"temperatures": scaled.temperatures})``,
    then rebuild with ``TemperatureScaledModel(model, info["extra"]["temperatures"])``.
    """

    def __init__(self, model: torch.nn.Module, temperatures: Mapping[str, float]):
        super().__init__()
        if getattr(model.config, "head", "classification") != "classification":
            raise ValueError("temperature scaling needs classification heads, not a regression model")
        self.model = model
        self.head_names = tuple(model.heads.keys()) if hasattr(model, "heads") else tuple(temperatures)
        missing = [n for n in self.head_names if n not in temperatures]
        if missing:
            raise ValueError(f"no temperature for head(s) {missing}")
        temps = torch.tensor([float(temperatures[n]) for n in self.head_names], dtype=torch.float32)
        if not torch.all(torch.isfinite(temps) & (temps > 0)):
            raise ValueError(f"temperatures must be finite and > 0, got {dict(temperatures)}")
        self.register_buffer("temperature", temps)

    @property
    def config(self):
        return self.model.config

    @property
    def temperatures(self) -> dict[str, float]:
        """Plain floats (JSON- and ``torch.load(weights_only=True)``-safe) per head."""
        return {n: float(t) for n, t in zip(self.head_names, self.temperature.tolist(), strict=True)}

    def forward(self, flux: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        out = self.model(flux, mask)
        logits = {name: z / self.temperature[self.head_names.index(name)].to(z.dtype)
                  for name, z in out["logits"].items()}
        return {**out, "logits": logits}


# -- calibration metrics -------------------------------------------------------------------------
def _clean(pmf, truth, bins: LabelBins, centre=None):
    """Normalized PMFs and clipped truths of the informative rows (mass > 0, finite truth), and the
    rows' ``centre`` (None stays None)."""
    p = np.atleast_2d(_numpy(pmf))
    if p.shape[1] != bins.nbins:
        raise ValueError(f"{bins.name}: pmf has {p.shape[1]} bins, expected {bins.nbins}")
    v = np.atleast_1d(_numpy(truth))
    if v.shape != (len(p),):
        raise ValueError(f"truth must be ({len(p)},), got {v.shape}")
    tot = p.sum(axis=1)
    keep = (tot > 0) & np.isfinite(tot) & np.isfinite(v)
    c = bins.centers
    kept_centre = None if centre is None else np.atleast_1d(_numpy(centre))[keep]
    return p[keep] / tot[keep, None], np.clip(v[keep], c[0], c[-1]), kept_centre


def central_interval(pmf, bins: LabelBins, level: float) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of the central ``level`` credible interval of each (renormalized) PMF row."""
    p = np.atleast_2d(_numpy(pmf))
    p = p / p.sum(axis=1, keepdims=True)
    q = bins.quantiles(p, [(1 - level) / 2, (1 + level) / 2])
    return q[:, 0], q[:, 1]


def coverage(pmf, truth, bins: LabelBins, level: float) -> float:
    """Fraction of true values inside the central ``level`` credible interval (informative rows)."""
    return float(reliability(pmf, truth, bins, levels=(level,))["coverage"][0])


def reliability(pmf, truth, bins: LabelBins, levels: Sequence[float] = DEFAULT_LEVELS, centre=None) -> dict:
    """Nominal ``levels`` vs empirical ``coverage`` of central intervals; ``n`` rows used.

    ``centre`` (n,): each row's intervals moved so that its median sits there (a widened PMF read
    about the unwidened median, :func:`remap_lib.prediction.widening.recentre`).
    """
    p, v, centre = _clean(pmf, truth, bins, centre)
    lv = np.asarray(levels, dtype=np.float64)
    if len(p) == 0:
        return {"levels": lv, "coverage": np.full(lv.shape, np.nan), "n": 0}
    q = bins.quantiles(p, np.concatenate([(1 - lv) / 2, (1 + lv) / 2]))
    if centre is not None:
        q = q + (centre - bins.quantiles(p, [0.5])[:, 0])[:, None]
    lo, hi = q[:, :lv.size], q[:, lv.size:]
    inside = (v[:, None] >= lo) & (v[:, None] <= hi)
    return {"levels": lv, "coverage": inside.mean(axis=0), "n": int(len(p))}


def interval_ece(pmf, truth, bins: LabelBins, levels: Sequence[float] = DEFAULT_LEVELS, centre=None) -> float:
    """mean_q |coverage(q) − q| over central credible intervals at ``levels`` (``centre``: :func:`reliability`)."""
    r = reliability(pmf, truth, bins, levels, centre)
    return float(np.mean(np.abs(r["coverage"] - r["levels"])))


def reliability_top_label(pmf, truth, bins: LabelBins, n_bins: int = 10) -> dict:
    """Per confidence interval ((b-1)/B, b/B]: mean confidence, accuracy and count (NaN if empty)."""
    p, v, _ = _clean(pmf, truth, bins)
    conf = p.max(axis=1)
    correct = np.argmax(p, axis=1) == bins.bin_index(v)
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins) / count
        acc = np.bincount(b, weights=correct.astype(np.float64), minlength=n_bins) / count
    return {"bin_edges": np.linspace(0.0, 1.0, n_bins + 1), "bin_confidence": mean_conf,
            "bin_accuracy": acc, "bin_count": count}


def top_label_ece(pmf, truth, bins: LabelBins, n_bins: int = 10) -> float:
    """Σ_b (n_b / N) |accuracy_b − confidence_b|, confidence = max_k p_k, correct = truth in argmax bin."""
    r = reliability_top_label(pmf, truth, bins, n_bins)
    n = r["bin_count"]
    if n.sum() == 0:
        return float("nan")
    used = n > 0
    return float(np.sum(n[used] * np.abs(r["bin_accuracy"][used] - r["bin_confidence"][used])) / n.sum())


def expected_calibration_error(pmf, truth_values, bins: LabelBins, n_bins: int = 10,
                               levels: Sequence[float] = DEFAULT_LEVELS) -> dict[str, float]:
    """Both variants: ``{"top_label": top_label_ece, "interval": interval_ece}`` (module docstring)."""
    return {"top_label": top_label_ece(pmf, truth_values, bins, n_bins),
            "interval": interval_ece(pmf, truth_values, bins, levels)}


def calibration_summary(pmfs: Mapping[str, np.ndarray], labels, bins: Mapping[str, LabelBins]) -> dict:
    """Per label of ``pmfs`` ({label: (n, nbins)}): the numbers notebook 04 reports and plots.

    ``{label: {"ece_interval", "ece_top_label", "coverage_68", "coverage_95", "reliability"}}``, with
    ``labels`` (n, 3) in :data:`~remap_lib.constants.LABEL_NAMES` order and ``reliability`` the
    :func:`reliability` dict (for :func:`plot_reliability`).
    """
    labels = np.asarray(labels)
    out = {}
    for j, name in enumerate(LABEL_NAMES):
        pmf, truth, b = pmfs[name], labels[:, j], bins[name]
        ece = expected_calibration_error(pmf, truth, b)
        out[name] = {"ece_interval": ece["interval"], "ece_top_label": ece["top_label"],
                     "coverage_68": coverage(pmf, truth, b, 0.68), "coverage_95": coverage(pmf, truth, b, 0.95),
                     "reliability": reliability(pmf, truth, b)}
    return out


def plot_reliability(ax, before: dict, after: dict | None = None, title: str | None = None,
                     labels=("before", "after")):
    """Reliability diagram on ``ax``: the diagonal plus one curve per dict.

    Dicts from :func:`reliability` plot nominal level vs empirical coverage; dicts from
    :func:`reliability_top_label` plot mean confidence vs accuracy.
    """
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="calibrated")
    for d, lab, style in ((before, labels[0], "o-"), (after, labels[1], "s-")):
        if d is None:
            continue
        if "levels" in d:
            x, y = d["levels"], d["coverage"]
        else:
            x, y = d["bin_confidence"], d["bin_accuracy"]
        ok = np.isfinite(x) & np.isfinite(y)
        ax.plot(np.asarray(x)[ok], np.asarray(y)[ok], style, ms=4, label=lab)
    top = "levels" in before
    ax.set_xlabel("nominal coverage of central interval" if top else "confidence (max p)")
    ax.set_ylabel("empirical coverage" if top else "accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax
