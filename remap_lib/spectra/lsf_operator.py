"""The sparse matrix that maps input pixels to output pixels: LSF convolution and flux-conserving
rebinning in one exact operator (see :mod:`remap_lib.spectra.preprocess` for the weights), built with
vectorised numpy, cached per (input grid, output grid, kernel) and applied to a batch at once.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import ndtr

from remap_lib.constants import FWHM_TO_SIGMA
from remap_lib.spectra.checks import pixel_edges

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _second_antiderivative(x: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """G(x) = σ·F(x/σ), F(t) = tΦ(t) + φ(t); G → max(x, 0) as σ → 0 (then it is evaluated exactly)."""
    pos = sigma > 0
    if pos.all():  # the usual degrade case: skip the masked copies
        t = x / sigma
        return sigma * (t * ndtr(t) + np.exp(-0.5 * t * t) / _SQRT_2PI)
    out = np.maximum(x, 0.0)
    if np.any(pos):
        s = sigma[pos]
        t = x[pos] / s
        out[pos] = s * (t * ndtr(t) + np.exp(-0.5 * t * t) / _SQRT_2PI)
    return out


def _digest(*arrays) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class SpectralOperator:
    """Sparse map from input pixels to output pixels (Gaussian LSF + flux-conserving rebinning).

    ``matrix[j, i]`` is the (unnormalised) weight D_ij of input pixel ``in_start + i`` in output pixel
    ``j``; an output value is Σ_i D_ij f_i / Σ_i D_ij over the usable input pixels. ``width`` is the
    output pixel width, so ``Σ_i D_ij / width_j`` is the fraction of output pixel j (including its
    kernel) covered by usable data.
    """

    matrix: sp.csr_matrix  # (n_out, in_stop - in_start)
    matrix_sq: sp.csr_matrix  # element-wise square, for variance propagation
    rowsum: np.ndarray  # Σ_i D_ij over all input pixels
    width: np.ndarray  # output pixel widths (Å)
    wave_out: np.ndarray
    n_in: int  # length of the full input grid the operator was built for
    in_start: int
    in_stop: int

    def apply(self, flux, ivar=None, mask=None, min_coverage: float = 0.5):
        """Map a spectrum or batch on the input grid to the output grid.

        Unusable input pixels (``mask`` True, non-finite flux, ivar ≤ 0 or NaN) are left out and the
        weights renormalised. Returns ``(flux, ivar, mask)``: ``ivar`` from
        var_out = Σ D² var_in / (Σ D)² (None when no ivar was given); ``mask`` True where usable data
        cover less than ``min_coverage`` of the output pixel's weight (flux NaN, ivar 0 there).
        """
        flux = np.asarray(flux, dtype=np.float64)
        if flux.shape[-1] != self.n_in:
            raise ValueError(f"flux has {flux.shape[-1]} pixels, the operator was built for {self.n_in}")
        one = flux.ndim == 1
        sl = slice(self.in_start, self.in_stop)
        f = np.atleast_2d(flux)[:, sl]
        good = np.isfinite(f)
        if mask is not None:
            good &= ~np.atleast_2d(np.asarray(mask, dtype=bool))[:, sl]
        if ivar is not None:
            iv = np.atleast_2d(np.asarray(ivar, dtype=np.float64))[:, sl]
            good &= np.isfinite(iv) & (iv > 0)
        # CSR @ dense (n_in, nspec): one pass over the matrix for the whole batch.
        num = (self.matrix @ np.ascontiguousarray(np.where(good, f, 0.0).T)).T
        if good.all():
            den = np.broadcast_to(self.rowsum, num.shape)
        else:
            den = (self.matrix @ np.ascontiguousarray(good.T, dtype=np.float64)).T
        out_mask = den < min_coverage * self.width
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(out_mask, np.nan, num / den)
            ivar_out = None
            if ivar is not None:
                var = np.where(good, 1.0 / np.where(good, iv, 1.0), 0.0)
                var_out = (self.matrix_sq @ np.ascontiguousarray(var.T)).T / (den * den)
                ivar_out = np.where(out_mask | ~(var_out > 0), 0.0, 1.0 / var_out)
        if one:
            return out[0], (None if ivar_out is None else ivar_out[0]), out_mask[0]
        return out, ivar_out, out_mask


_OPERATORS: OrderedDict[tuple, SpectralOperator] = OrderedDict()
_OPERATOR_CACHE_SIZE = 16


def build_operator(wave_in, wave_out, kernel_fwhm=None, nsigma: float = 5.0) -> SpectralOperator:
    """The sparse operator from grid ``wave_in`` to grid ``wave_out`` (both Å, increasing).

    ``kernel_fwhm`` is the Gaussian kernel FWHM in Å at each output pixel (array or scalar); None or 0
    means plain flux-conserving resampling. The kernel is truncated at ``nsigma`` σ (rows are
    renormalised, so the truncation error is ~1e-6 of the line depth at 5σ). Only the input pixels
    the output needs are used (``in_start:in_stop``), so a 1.5M-pixel PHOENIX grid costs what its
    window costs. Operators are cached on the content of the grids and kernel.
    """
    wave_in = np.asarray(wave_in, dtype=np.float64)
    wave_out = np.asarray(wave_out, dtype=np.float64)
    nout = wave_out.size
    fwhm = np.zeros(nout) if kernel_fwhm is None else np.broadcast_to(np.asarray(kernel_fwhm, float), (nout,))
    sigma = np.ascontiguousarray(fwhm * FWHM_TO_SIGMA)
    e_out = pixel_edges(wave_out)
    reach = nsigma * sigma
    # Crop the input to what the output can see, then key the cache on the cropped grid.
    start = max(int(np.searchsorted(wave_in, e_out[0] - reach[0], "left")) - 2, 0)
    stop = min(int(np.searchsorted(wave_in, e_out[-1] + reach[-1], "right")) + 2, wave_in.size)
    key = (_digest(wave_in[start:stop], wave_out, sigma), wave_in.size, start, float(nsigma))
    if key in _OPERATORS:
        _OPERATORS.move_to_end(key)
        return _OPERATORS[key]

    e_in = pixel_edges(wave_in)[start : stop + 1]
    nin = stop - start
    # Input pixels overlapping [e_j - nσ_j, e_{j+1} + nσ_j]: pixels lo_j .. hi_j-1.
    lo = np.clip(np.searchsorted(e_in, e_out[:-1] - reach, "right") - 1, 0, nin)
    hi = np.clip(np.searchsorted(e_in, e_out[1:] + reach, "left"), 0, nin)
    hi = np.maximum(hi, lo)
    npx = hi - lo  # pixels per row
    nedge = np.where(npx > 0, npx + 1, 0)  # edges per row
    # Ragged layout without loops: row id and in-row position of every edge evaluation.
    row_e = np.repeat(np.arange(nout), nedge)
    first_e = np.cumsum(nedge) - nedge
    pos_e = np.arange(row_e.size) - first_e[row_e]
    edge = e_in[lo[row_e] + pos_e]
    s = sigma[row_e]
    # H_jk = ∫ over output pixel j of Φ((λ - E_k)/σ_j) dλ; D_ij = H_ji - H_j,i+1.
    h = _second_antiderivative(e_out[1:][row_e] - edge, s) - _second_antiderivative(e_out[:-1][row_e] - edge, s)
    keep = pos_e < nedge[row_e] - 1  # every edge except each row's last opens a pixel
    idx = np.flatnonzero(keep)
    data = h[idx] - h[idx + 1]
    cols = lo[row_e[idx]] + pos_e[idx]
    indptr = np.concatenate(([0], np.cumsum(npx)))
    data = np.maximum(data, 0.0)  # round-off far in the wings can give -1e-17
    matrix = sp.csr_matrix((data, cols, indptr), shape=(nout, nin))
    matrix_sq = sp.csr_matrix((data * data, cols, indptr), shape=(nout, nin))
    op = SpectralOperator(
        matrix=matrix,
        matrix_sq=matrix_sq,
        rowsum=np.asarray(matrix.sum(axis=1)).ravel(),
        width=np.diff(e_out),
        wave_out=wave_out,
        n_in=wave_in.size,
        in_start=start,
        in_stop=stop,
    )
    _OPERATORS[key] = op
    while len(_OPERATORS) > _OPERATOR_CACHE_SIZE:
        _OPERATORS.popitem(last=False)
    return op
