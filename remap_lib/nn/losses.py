"""Losses for deep-REMAP: focal + cost-matrix classification over label bins, batch-hard triplet.

* :func:`focal_cost_loss` — the paper's "asymmetric" loss for one head: a focal term on soft
  (Gaussian) targets plus the expected cost of the predicted PMF under a Gaussian cost matrix, so
  probability placed far from the true bin costs more than probability placed next to it.
* :func:`batch_hard_triplet_loss` — pulls spectra with similar labels together in the embedding
  and pushes dissimilar ones apart (hardest positive / hardest negative per anchor).
* :class:`MultiTaskLoss` — the weighted sum over the three heads plus the triplet term.

Unknown labels: a target row that sums to 0 (``LabelBins.soft_targets`` of NaN) and a NaN label in
the triplet loss are ignored, so partially labelled batches train the heads they can.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from remap_lib.constants import LABEL_SCALES
from remap_lib.nn.binning import DEFAULT_BINS, LabelBins

# Triplet label scales (constants.LABEL_SCALES): 1 unit ≈ 100 K ≈ 0.2 dex ≈ 0.1 dex, so that
# pos_radius=1 means "about as close as the target accuracy" and neg_radius=2 "clearly different".


def cost_matrix(nbins: int, sigma_bins: float) -> Tensor:
    """C[i, j] = 1 − exp(−(i−j)² / (2σ²)), σ in bins: 0 on the diagonal, → 1 far from it."""
    i = torch.arange(nbins, dtype=torch.float64)
    d2 = (i[:, None] - i[None, :]) ** 2
    return (1.0 - torch.exp(-d2 / (2.0 * float(sigma_bins) ** 2))).float()


def class_weights_from_counts(counts, power: float = 0.5) -> Tensor:
    """Per-bin weights ∝ count^(−power), normalized to mean 1, against label imbalance.

    Empty bins get the weight of the rarest occupied bin (not infinity): they can still receive
    soft-target tails. ``counts`` may be fractional (e.g. column sums of soft targets).
    """
    c = torch.as_tensor(counts, dtype=torch.float64).clone()
    if c.ndim != 1 or torch.any(c < 0):
        raise ValueError("counts must be a 1-D array of non-negative numbers")
    pos = c > 0
    if not pos.any():
        return torch.ones_like(c, dtype=torch.float32)
    c[~pos] = c[pos].min()
    w = c ** (-float(power))
    return (w / w.mean()).float()


def _no_autocast(t: Tensor):
    """Losses run in float32 even inside autocast: the cost matmul and the Gram-matrix distances
    (|a|²+|b|²−2a·b cancels) lose too much in bf16/fp16."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def _reduce(per_sample: Tensor, valid: Tensor, reduction: str) -> Tensor:
    per_sample = torch.where(valid, per_sample, torch.zeros_like(per_sample))
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        # clamp: an all-unknown batch gives 0 (with a zero, finite grad), not 0/0.
        return per_sample.sum() / valid.sum().clamp(min=1)
    raise ValueError(f"unknown reduction {reduction!r}")


def focal_cost_loss(
    logits: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    class_weights: Tensor | None = None,
    cost: Tensor | None = None,
    cost_weight: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """Focal loss on soft targets plus expected cost, per sample:

        −Σ_k w_k t_k (1−p_k)^γ log p_k  +  cost_weight · Σ_i Σ_j t_i C[i, j] p_j

    ``logits``, ``target``: (n, nbins); target rows are PMFs (one-hot allowed) or all zero (unknown:
    excluded from the mean). γ=0 without weights or cost is cross-entropy with soft targets.
    Computed in float32 whatever the logits' dtype (mixed precision).
    """
    with _no_autocast(logits):
        logp = F.log_softmax(logits.float(), dim=-1)
        p = logp.exp()
        t = target.to(logp.dtype)
        mod = (1.0 - p).clamp(min=0.0) ** gamma if gamma else torch.ones_like(p)
        focal = -(t * mod * logp)
        if class_weights is not None:
            focal = focal * class_weights.to(focal)
        loss = focal.sum(-1)
        if cost is not None and cost_weight:
            loss = loss + cost_weight * ((t @ cost.to(p)) * p).sum(-1)
        return _reduce(loss, t.sum(-1) > 0, reduction)


def scale_labels(labels, scales: Sequence[float] = LABEL_SCALES):
    """labels / scales (Teff/100 K, log g/0.2 dex, [Fe/H]/0.1 dex by default); numpy or torch."""
    if isinstance(labels, Tensor):
        return labels / torch.as_tensor(scales, dtype=labels.dtype, device=labels.device)
    return np.asarray(labels, dtype=np.float64) / np.asarray(scales, dtype=np.float64)


def batch_hard_triplet_loss(
    embeddings: Tensor, labels: Tensor, margin: float = 0.2, pos_radius: float = 1.0, neg_radius: float = 2.0
) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) with positives/negatives defined by labels.

    ``embeddings``: (n, d), assumed L2-normalized; Euclidean distances. ``labels``: (n, k) already
    scaled (see :func:`scale_labels`). Positive: label distance ≤ pos_radius (not itself); negative:
    label distance ≥ neg_radius; a row with any NaN label is neither. Per anchor with ≥1 of each:
    relu(max d(positive) − min d(negative) + margin); mean over such anchors, 0 if none.
    """
    with _no_autocast(embeddings):
        x = embeddings.float()
        lab = labels.to(x)
        n = x.shape[0]
        sq = (x * x).sum(-1)
        d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.T
        # clamp_min keeps sqrt's gradient finite at distance 0 (identical embeddings, the diagonal).
        dist = d2.clamp(min=1e-12).sqrt()
        ld = torch.linalg.vector_norm(lab[:, None, :] - lab[None, :, :], dim=-1)  # NaN if any label NaN
        not_self = ~torch.eye(n, dtype=torch.bool, device=x.device)
        pos = (ld <= pos_radius) & not_self  # comparisons with NaN are False
        neg = ld >= neg_radius
        valid = pos.any(1) & neg.any(1)
        d_ap = torch.where(pos, dist, torch.zeros_like(dist)).amax(1)
        d_an = torch.where(neg, dist, torch.full_like(dist, float("inf"))).amin(1)
        d_an = torch.where(valid, d_an, torch.zeros_like(d_an))  # drop the infs before they meet arithmetic
        return _reduce(F.relu(d_ap - d_an + margin), valid, "mean")


class MultiTaskLoss(torch.nn.Module):
    """Σ_heads w_h · focal_cost_loss + triplet_weight · batch_hard_triplet_loss.

    ``cost_sigma`` is in label units per head (default 100 K, 0.2 dex, 0.1 dex — the label-noise
    scale, our choice) and is converted to bins with the head's mean bin width. Cost matrices and
    class weights are buffers, so ``.to(device)`` moves them.
    """

    def __init__(
        self,
        bins: Mapping[str, LabelBins] | Sequence[LabelBins] = DEFAULT_BINS,
        gamma: float = 2.0,
        cost_sigma: Sequence[float] | None = LABEL_SCALES,
        cost_weight: float = 1.0,
        class_weights: Mapping[str, Tensor] | Sequence[Tensor | None] | None = None,
        head_weights: Sequence[float] | None = None,
        triplet_weight: float = 0.1,
        triplet_margin: float = 0.2,
        label_scales: Sequence[float] = LABEL_SCALES,
        pos_radius: float = 1.0,
        neg_radius: float = 2.0,
    ):
        super().__init__()
        self.bins = list(bins.values()) if isinstance(bins, Mapping) else list(bins)
        self.names = [b.name for b in self.bins]
        nh = len(self.bins)
        self.gamma, self.cost_weight = float(gamma), float(cost_weight)
        self.head_weights = [1.0] * nh if head_weights is None else [float(w) for w in head_weights]
        self.triplet_weight, self.triplet_margin = float(triplet_weight), float(triplet_margin)
        self.label_scales = tuple(float(s) for s in label_scales)
        self.pos_radius, self.neg_radius = float(pos_radius), float(neg_radius)
        if isinstance(class_weights, Mapping):
            class_weights = [class_weights.get(nm) for nm in self.names]
        for j, b in enumerate(self.bins):
            cm = None
            if cost_sigma is not None and cost_sigma[j]:
                cm = cost_matrix(b.nbins, float(cost_sigma[j]) / float(b.widths.mean()))
            self.register_buffer(f"cost_{b.name}", cm)
            cw = None if class_weights is None or class_weights[j] is None else torch.as_tensor(class_weights[j])
            self.register_buffer(f"cw_{b.name}", None if cw is None else cw.float())

    def forward(
        self,
        logits: Mapping[str, Tensor] | Sequence[Tensor],
        targets: Mapping[str, Tensor] | Sequence[Tensor],
        embedding: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """``logits``/``targets`` per head (dict by name or list in bin order); ``labels``: (n, 3)
        physical labels (NaN = unknown), scaled here with ``label_scales`` for the triplet term,
        which is skipped if ``embedding`` or ``labels`` is None or triplet_weight is 0.

        Returns (total, components): components are floats per head name, "triplet" and "total".
        """
        if isinstance(logits, Mapping):
            logits = [logits[nm] for nm in self.names]
        if isinstance(targets, Mapping):
            targets = [targets[nm] for nm in self.names]
        parts: dict[str, Tensor] = {}
        total = logits[0].new_zeros((), dtype=torch.float32)
        for j, nm in enumerate(self.names):
            parts[nm] = focal_cost_loss(
                logits[j],
                targets[j],
                self.gamma,
                getattr(self, f"cw_{nm}"),
                getattr(self, f"cost_{nm}"),
                self.cost_weight,
            )
            total = total + self.head_weights[j] * parts[nm]
        if self.triplet_weight and embedding is not None and labels is not None:
            parts["triplet"] = batch_hard_triplet_loss(
                embedding,
                scale_labels(labels.to(embedding.device).float(), self.label_scales),
                self.triplet_margin,
                self.pos_radius,
                self.neg_radius,
            )
            total = total + self.triplet_weight * parts["triplet"]
        parts["total"] = total
        # One device->host transfer for all logged values.
        vals = torch.stack([v.detach().float() for v in parts.values()]).tolist()
        return total, dict(zip(parts, vals, strict=True))
