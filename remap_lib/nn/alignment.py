"""Domain alignment: the maximum mean discrepancy between synthetic and observed spectra's features.

A network pretrained on synthetic spectra and fine-tuned on observed dwarfs reads an observed giant
through features that were learnt on synthetic giants, and the two need not look alike to it (the
sim-to-real gap behind the giants' log g offset). Aligning the feature distributions of the two
domains (Long et al. 2015, ICML, "deep adaptation networks") asks the backbone to map a synthetic
and an observed spectrum of the same kind of star to the same place, using only the observed
spectra, not their labels.

Marginal alignment would also align what differs for a good reason: the batches' observed spectra
are mostly dwarfs, the grid's spectra are spread over the whole box, and forcing the two
distributions together under such a label shift moves the features away from the labels (Zhao et
al. 2019, ICML). So the discrepancy is taken within classes that are known on both sides without
an observed giant's label: dwarfs with dwarfs, giants with giants (:func:`class_conditional_mmd2`).

The statistic is the unbiased estimate of MMD² (Gretton et al. 2012, JMLR 13, 723, eq. 3) with a
sum of Gaussian kernels whose widths are multiples of the median pairwise distance of the batch
(:data:`BANDWIDTH_FACTORS`; the median heuristic, taken without gradient).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Kernel widths as multiples of the batch's median pairwise distance (a multi-kernel MMD, as in Long et
#: al. 2015, so no one width has to be right; our choice of the three).
BANDWIDTH_FACTORS = (0.5, 1.0, 2.0)


def median_distance(x: Tensor) -> Tensor:
    """The median of the pairwise Euclidean distances between the rows of ``x`` (n, d), without gradient."""
    with torch.no_grad():
        d = torch.cdist(x.float(), x.float())
        off = d[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
        return off.median() if off.numel() else torch.ones((), device=x.device)


def gaussian_mmd2(x: Tensor, y: Tensor, bandwidth: Tensor | float, factors=BANDWIDTH_FACTORS) -> Tensor:
    """Unbiased MMD² between the rows of ``x`` (m, d) and ``y`` (n, d), m, n ≥ 2.

    The kernel is Σ_f exp(−|a − b|² / (2 (f · bandwidth)²)) over ``factors``. Within-sample sums leave
    out the diagonal, so the estimate is 0 in expectation when both samples come from one
    distribution (and may then be negative).
    """
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD² needs at least 2 rows on each side, got {m} and {n}")
    z = torch.cat([x, y]).float()
    d2 = torch.cdist(z, z).pow(2)
    bandwidth = torch.as_tensor(bandwidth, dtype=z.dtype, device=z.device).clamp_min(1e-12)
    k = sum(torch.exp(-d2 / (2.0 * (f * bandwidth) ** 2)) for f in factors)
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    return ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
            - 2.0 * kxy.mean())


def class_conditional_mmd2(features: Tensor, synthetic: Tensor, giant: Tensor) -> Tensor:
    """Mean over the classes (dwarf, giant) of the MMD² between the batch's synthetic and observed rows.

    ``features`` (B, d); ``synthetic``, ``giant`` (B,) booleans: each row's domain and class. A class
    with fewer than two rows on either side is skipped; with none left the result is a zero that
    still carries the graph (so a batch without synthetic rows costs nothing). The kernel width is
    the median distance over the whole batch, so both classes are measured on one scale.
    """
    bandwidth = median_distance(features)
    terms = []
    for members in (~giant, giant):
        src, tgt = features[members & synthetic], features[members & ~synthetic]
        if len(src) >= 2 and len(tgt) >= 2:
            terms.append(gaussian_mmd2(src, tgt, bandwidth))
    if not terms:
        return features.sum() * 0.0
    return torch.stack(terms).mean()
