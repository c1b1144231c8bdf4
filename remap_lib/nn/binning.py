"""Label bins: regression as classification.

Each stellar parameter (Teff, log g, [Fe/H]) is predicted as a probability mass function (PMF) over
fixed bins. This module turns labels into targets (:meth:`LabelBins.soft_targets`) and PMFs back into
point estimates and intervals (:meth:`LabelBins.decode`).

Conventions the training and evaluation code rely on:

* A target row that is all zeros means "label unknown"; :func:`remap_lib.nn.losses.focal_cost_loss`
  skips such rows.
* Soft targets are the Gaussian N(value, sigma) integrated over each bin and renormalized over the
  binned range (a truncated Gaussian); values outside the range are first clipped to the outermost
  bin centre.
* Decoding treats the mass as uniform *within* each bin: percentiles interpolate the CDF linearly
  between bin edges, and ``std`` includes the within-bin variance width²/12, so a one-hot PMF has
  std = width/√12 rather than 0 (the binning itself is an uncertainty).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

# Percentiles returned by decode(): name -> quantile.
QUANTILES = {"median": 0.5, "p16": 0.16, "p84": 0.84, "p2_5": 0.025, "p97_5": 0.975}


@dataclass(frozen=True)
class LabelBins:
    """Contiguous bins for one label: ``edges`` are nbins+1 strictly increasing floats."""

    name: str
    edges: tuple[float, ...]
    unit: str = ""

    def __post_init__(self):
        e = np.asarray(self.edges, dtype=np.float64).ravel()
        if e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
            raise ValueError(f"{self.name}: edges must be >= 2 finite, strictly increasing values")
        # A tuple keeps the frozen dataclass hashable and comparable with ==.
        object.__setattr__(self, "edges", tuple(float(x) for x in e))

    @classmethod
    def uniform(cls, name: str, lo: float, hi: float, width: float, unit: str = "") -> LabelBins:
        n = int(round((hi - lo) / width))
        if n < 1 or abs(n * width - (hi - lo)) > 1e-6 * width:
            raise ValueError(f"{name}: ({hi} - {lo}) is not a whole number of {width}-wide bins")
        # lo + width·i, not cumulative sums, so the edges carry no accumulated rounding error.
        return cls(name, tuple(lo + width * np.arange(n + 1)), unit)

    @property
    def edges_array(self) -> np.ndarray:
        return np.asarray(self.edges, dtype=np.float64)

    @property
    def nbins(self) -> int:
        return len(self.edges) - 1

    @property
    def centers(self) -> np.ndarray:
        e = self.edges_array
        return 0.5 * (e[:-1] + e[1:])

    @property
    def widths(self) -> np.ndarray:
        return np.diff(self.edges_array)

    def to_dict(self) -> dict:
        return {"name": self.name, "edges": list(self.edges), "unit": self.unit}

    @classmethod
    def from_dict(cls, d: Mapping) -> LabelBins:
        return cls(d["name"], tuple(d["edges"]), d.get("unit", ""))

    # -- encoding -------------------------------------------------------------------------------
    def bin_index(self, values) -> np.ndarray:
        """Index of the bin holding each value (clipped to the range; a value on an inner edge goes
        to the upper bin); NaN -> -1."""
        v = np.asarray(values, dtype=np.float64)
        idx = np.clip(np.searchsorted(self.edges_array, v, side="right") - 1, 0, self.nbins - 1)
        return np.where(np.isnan(v), -1, idx).astype(np.int64)

    def soft_targets(self, values, sigma=None) -> np.ndarray:
        """(n, nbins) float32 targets: N(value, sigma) integrated over each bin, rows summing to 1.

        ``sigma`` is None, a scalar or a per-sample array (label units). Samples whose sigma is
        None, 0, negative or non-finite get a one-hot row; NaN values get an all-zero row.
        """
        v = np.atleast_1d(np.asarray(values, dtype=np.float64))
        if v.ndim != 1:
            raise ValueError("values must be 1-D")
        s = np.zeros_like(v) if sigma is None else np.broadcast_to(np.asarray(sigma, dtype=np.float64), v.shape)
        known = ~np.isnan(v)
        c = self.centers
        vc = np.clip(np.where(known, v, c[0]), c[0], c[-1])  # out-of-range labels keep a valid target
        gauss = known & np.isfinite(s) & (s > 0)
        out = np.zeros((v.size, self.nbins), dtype=np.float64)
        if gauss.any():
            z = (self.edges_array[None, :] - vc[gauss, None]) / s[gauss, None]
            mass = np.diff(ndtr(z), axis=1)
            tot = mass.sum(axis=1, keepdims=True)
            # tot > 0 always (vc lies inside the range); guard anyway against a pathological sigma.
            out[gauss] = np.where(tot > 0, mass / np.where(tot > 0, tot, 1.0), 0.0)
            gauss[gauss] = tot[:, 0] > 0
        hard = known & ~gauss
        out[np.flatnonzero(hard), self.bin_index(vc[hard])] = 1.0
        return out.astype(np.float32)

    # -- decoding -------------------------------------------------------------------------------
    def quantiles(self, p: np.ndarray, qs) -> np.ndarray:
        """(n, len(qs)) quantiles of (n, nbins) normalized PMFs, mass uniform within each bin."""
        qs = np.asarray(qs, dtype=np.float64)
        cdf = np.cumsum(p, axis=1)  # CDF at the upper edge of each bin
        lower = np.concatenate([np.zeros((p.shape[0], 1)), cdf[:, :-1]], axis=1)
        # Bin k with CDF(lower edge) < q <= CDF(upper edge), per row and level; such a bin has p_k > 0.
        k = np.clip((cdf[:, None, :] < qs[None, :, None]).sum(axis=2), 0, self.nbins - 1)
        pk = np.take_along_axis(p, k, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.clip((qs[None, :] - np.take_along_axis(lower, k, axis=1)) / pk, 0.0, 1.0)
        return self.edges_array[k] + frac * self.widths[k]

    def decode(self, pmf) -> dict[str, np.ndarray]:
        """Point estimates and intervals from (n, nbins) PMFs (numpy or torch; rows renormalized).

        Returns arrays of shape (n,): ``mean``, ``std``, ``mode`` (centre of the most probable bin)
        and the percentiles ``median``, ``p16``, ``p84``, ``p2_5``, ``p97_5``. Mass is uniform within
        a bin, so percentiles are linear CDF interpolation between edges and ``std`` adds width²/12.
        An all-zero row decodes to NaN.
        """
        if hasattr(pmf, "detach"):  # torch tensor, without importing torch here
            pmf = pmf.detach().float().cpu().numpy()
        p = np.atleast_2d(np.asarray(pmf, dtype=np.float64))
        if p.shape[-1] != self.nbins:
            raise ValueError(f"{self.name}: pmf has {p.shape[-1]} bins, expected {self.nbins}")
        tot = p.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = p / tot
        c, w = self.centers, self.widths
        mean = p @ c
        var = p @ (c**2 + w**2 / 12.0) - mean**2
        out = {"mean": mean, "std": np.sqrt(np.clip(var, 0.0, None)), "mode": c[np.argmax(p, axis=1)]}
        levels = self.quantiles(p, list(QUANTILES.values()))
        out.update({key: levels[:, i] for i, key in enumerate(QUANTILES)})
        bad = ~(tot[:, 0] > 0)
        for arr in out.values():
            arr[bad] = np.nan
        return out


# Bin widths are OUR choice: the paper (arXiv:2510.09362) does not publish its binning. Ranges cover
# the MARCS FGK grid (Teff 3800–7000 K, log g 0.5–5.0, [M/H] −2.5…+0.5) with a margin of a few bins;
# widths are ~1/2–2/3 of the target accuracy (75 K, 0.12 dex, 0.08 dex), so quantization is small
# (a bin's own std is width/√12: 14 K, 0.03 dex, 0.014 dex).
DEFAULT_BINS: dict[str, LabelBins] = {
    "teff": LabelBins.uniform("teff", 3700.0, 7100.0, 50.0, "K"),  # 68 bins
    "logg": LabelBins.uniform("logg", 0.3, 5.2, 0.1, "dex"),  # 49 bins
    "feh": LabelBins.uniform("feh", -2.7, 0.7, 0.05, "dex"),  # 68 bins
}


def _as_bin_list(bins) -> list[LabelBins]:
    return list(bins.values()) if isinstance(bins, Mapping) else list(bins)


def encode_labels(labels, bins: Mapping[str, LabelBins] | Sequence[LabelBins] = DEFAULT_BINS, sigma=None):
    """Soft targets for an (n, 3) label array, one (n, nbins_j) float32 array per column.

    ``sigma``: None (one-hot), a sequence of one entry per column (each None, scalar or (n,) array),
    or an (n, 3) array of per-sample uncertainties.
    """
    blist = _as_bin_list(bins)
    lab = np.asarray(labels, dtype=np.float64)
    if lab.ndim != 2 or lab.shape[1] != len(blist):
        raise ValueError(f"labels must be (n, {len(blist)}), got {lab.shape}")
    if sigma is None:
        sig = [None] * len(blist)
    elif isinstance(sigma, np.ndarray) and sigma.ndim == 2:
        sig = list(sigma.T)
    else:
        sig = list(sigma)
        if len(sig) != len(blist):
            raise ValueError(f"sigma needs one entry per label column ({len(blist)})")
    return [b.soft_targets(lab[:, j], sig[j]) for j, b in enumerate(blist)]
