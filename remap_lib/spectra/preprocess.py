"""Spectrum preprocessing: LSF degradation, resampling, continuum normalization, and the one call that does all.

The checks (:mod:`remap_lib.spectra.checks`), the air/vacuum conversion (:mod:`remap_lib.spectra.medium`)
and the sparse operator (:mod:`remap_lib.spectra.lsf_operator`) live in their own modules; their public
names are imported here too, so ``from remap_lib.spectra.preprocess import ...`` reaches every step.

Everything here is batched: flux arrays have shape ``(npix,)`` or ``(nspec, npix)`` on one shared
wavelength grid (Å), and no function loops over pixels in Python.

The workhorse is :class:`SpectralOperator`, one sparse matrix that maps input pixels to output
pixels. Its entries are the *exact* weights for

1. treating the input as piecewise constant on its pixels (edges at the midpoints between
   pixel centres, like ``spectres``),
2. convolving with a Gaussian line-spread function (LSF) whose σ may vary with wavelength, and
3. averaging the result over each output pixel (flux-conserving rebinning).

For input pixel ``i`` = [a, b] and output pixel ``j`` = [e0, e1] with kernel σ_j the weight is
``D_ij = G(e1-a) - G(e0-a) - G(e1-b) + G(e0-b)`` with ``G(x) = σ·F(x/σ)`` and
``F(t) = tΦ(t) + φ(t)`` (the second antiderivative of the Gaussian). When σ → 0, ``G(x) = max(x, 0)``
and ``D_ij`` is the overlap length of the two pixels, i.e. plain flux-conserving resampling. So one
code path serves "degrade + resample" and "resample only", and it stays exact however coarse the
input pixels are relative to the kernel. The matrix is built with vectorised numpy (ragged index
arithmetic, no per-pixel loops), cached per (input grid, output grid, kernel), and applied to a
whole batch as one sparse matmul.

:func:`to_instrument` is the one call used for every kind of spectrum (synthetic grid, PHOENIX,
observed MILES): check → air/vacuum → degrade + resample → continuum-normalize.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from remap_lib.constants import FWHM_TO_SIGMA
from remap_lib.fileio import RemapDataError
from remap_lib.spectra.checks import Checked, _check_companions, _check_wave, check_spectrum, pixel_edges, uncovered
from remap_lib.spectra.instruments import get_instrument
from remap_lib.spectra.lsf_operator import SpectralOperator, build_operator
from remap_lib.spectra.medium import AIR_VACUUM_MIN_WAVE, air_to_vacuum, convert_medium, vacuum_to_air

__all__ = [
    "AIR_VACUUM_MIN_WAVE",
    "Checked",
    "SpectralOperator",
    "Spectra",
    "air_to_vacuum",
    "build_operator",
    "check_spectrum",
    "continuum_normalize",
    "convert_medium",
    "degrade",
    "kernel_fwhm",
    "pixel_edges",
    "resample",
    "to_instrument",
    "uncovered",
    "vacuum_to_air",
]


# --------------------------------------------------------------------------------------------
# Resampling and degradation
# --------------------------------------------------------------------------------------------
def resample(wave_in, flux_in, wave_out, ivar=None, mask=None, min_coverage: float = 0.5):
    """Flux-conserving resampling (bin-integral averaging, as spectres) of one spectrum or a batch.

    Each output pixel is the average of the input (piecewise constant on its pixels) over the
    output pixel, so Σ f_out·Δλ_out = Σ f_in·Δλ_in on the common range. Masked / NaN / zero-ivar
    input pixels are excluded; with weights W, var_out = Σ W² var_in / (Σ W)². Returns
    ``(flux, ivar, mask)``; output pixels with less than ``min_coverage`` of their width covered by
    usable input are masked (flux NaN, ivar 0). ``ivar`` is None when none was given.
    """
    wave_in = _check_wave(wave_in, "resample input")
    wave_out = _check_wave(wave_out, "resample output grid")
    op = build_operator(wave_in, wave_out, None)
    return op.apply(flux_in, ivar=ivar, mask=mask, min_coverage=min_coverage)


def pixel_fwhm2(wave) -> np.ndarray:
    """The FWHM² (Å²) a Gaussian gains when averaged over the pixels centred on ``wave``: a box of width
    Δλ has variance Δλ²/12, and FWHM² = 8 ln 2 · variance."""
    width = np.diff(pixel_edges(np.asarray(wave, dtype=np.float64)))
    return width**2 / 12.0 / FWHM_TO_SIGMA**2


def kernel_fwhm(wave, instrument, source_resolution=None, source_fwhm=None, source="<array>",
                pixel_in_lsf: bool = False) -> np.ndarray:
    """FWHM (Å) of the Gaussian that takes the source LSF to the instrument's, at each ``wave``.

    Widths add in quadrature: FWHM_kernel² = FWHM_target² − FWHM_source², where the source is a
    constant resolving power ``source_resolution``, a constant ``source_fwhm`` (Å) or, when both are
    None, infinitely sharp (native synthetic spectra). Raises RemapDataError (naming ``source``) if
    the source is coarser than the target anywhere: we cannot sharpen. Equal LSFs give 0.
    ``pixel_in_lsf``: the instrument's FWHM is the width its lines have on its own pixels (as measured
    on a spectrograph's output), so the output pixel's share (:func:`pixel_fwhm2`, at the pixels
    ``wave``) is taken off the target as well, and a degraded line ends up that wide, pixel included.
    """
    instrument = get_instrument(instrument)
    wave = np.asarray(wave, dtype=np.float64)
    if source_resolution is not None and source_fwhm is not None:
        raise ValueError("give source_resolution or source_fwhm, not both")
    target = instrument.lsf_fwhm(wave)
    what = f"the {instrument.name} LSF FWHM"
    if pixel_in_lsf:
        left = target**2 - pixel_fwhm2(wave)
        if np.any(left <= 0):
            raise ValueError(f"{instrument.name}: its pixels are too wide for its LSF to hold them (pixel_in_lsf)")
        target, what = np.sqrt(left), f"the {instrument.name} LSF FWHM less its pixel"
    if source_resolution is not None:
        src = wave / float(source_resolution)
    elif source_fwhm is not None:
        src = np.full_like(wave, float(source_fwhm))
    else:
        src = np.zeros_like(wave)
    diff = target**2 - src**2
    worst = int(np.argmin(diff / target**2))
    if diff[worst] < -1e-9 * target[worst] ** 2:  # tolerance: "equal" LSFs given two ways
        raise RemapDataError(
            source,
            f"cannot sharpen: source LSF FWHM {src[worst]:.4g} Å is wider than {what} "
            f"{target[worst]:.4g} Å at {wave[worst]:.6g} Å",
        )
    return np.sqrt(np.maximum(diff, 0.0))


def degrade(
    wave,
    flux,
    instrument,
    ivar=None,
    mask=None,
    source_resolution=None,
    source_fwhm=None,
    nsigma: float = 5.0,
    min_coverage: float = 0.5,
    source="<array>",
    pixel_in_lsf: bool = False,
):
    """Degrade to the instrument LSF and resample onto its grid, in one sparse matmul.

    ``wave`` must already be in the instrument's medium (see :func:`to_instrument`). The output is
    the input convolved with the quadrature-difference kernel (:func:`kernel_fwhm`) and averaged over
    each output pixel, so a line's measured width also contains the output pixel (variance Δλ²/12,
    ~2.5 % in FWHM at 3 pixels per resolution element) unless ``pixel_in_lsf`` (:func:`kernel_fwhm`).
    Returns ``(flux, ivar, mask)`` as :meth:`SpectralOperator.apply`.
    """
    instrument = get_instrument(instrument)
    grid = instrument.wavelength_grid()
    kern = kernel_fwhm(grid, instrument, source_resolution, source_fwhm, source, pixel_in_lsf)
    op = build_operator(wave, grid, kern, nsigma)
    return op.apply(flux, ivar=ivar, mask=mask, min_coverage=min_coverage)


# --------------------------------------------------------------------------------------------
# Continuum normalization
# --------------------------------------------------------------------------------------------
def continuum_normalize(
    wave,
    flux,
    ivar=None,
    mask=None,
    degree: int = 3,
    low: float = 1.5,
    high: float = 3.0,
    max_iter: int = 20,
    min_keep: float = 0.05,
):
    """Divide by a pseudo-continuum: iterative asymmetric sigma-clipped Legendre fit, batched.

    The same function is used for synthetic and observed spectra so both see the same definition
    of "continuum". Per spectrum, a Legendre polynomial of ``degree`` in λ (mapped to [-1, 1]) is
    fitted by weighted least squares (weights = ivar, or 1 when ``ivar`` is None), then pixels with
    residual below ``-low``·σ (absorption lines) or above ``high``·σ (cosmics, emission) are dropped
    and the fit repeated, up to ``max_iter`` times or until no pixel changes. σ is the weighted rms
    residual of the kept pixels (residuals scaled by √(ivar/mean ivar)); clipping is asymmetric
    because lines only ever pull the flux down. A spectrum stops early rather than keep fewer than
    ``min_keep`` of its usable pixels. All spectra are solved at once from batched normal equations.

    Returns ``(norm_flux, norm_ivar, continuum)``; ``norm_ivar = ivar·continuum²`` (None when
    ``ivar`` is None). Masked pixels (``mask`` True, NaN flux, ivar 0) are ignored by the fit and
    keep their (NaN or masked) values.
    """
    wave = np.asarray(wave, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    one = flux.ndim == 1
    f = np.atleast_2d(flux)
    good = np.isfinite(f)
    if mask is not None:
        good &= ~np.atleast_2d(np.asarray(mask, dtype=bool))
    if ivar is not None:
        iv = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
        good &= np.isfinite(iv) & (iv > 0)
        w = np.where(good, iv, 0.0)
    else:
        w = good.astype(np.float64)
    # Relative weights (mean 1 over usable pixels) keep numbers O(1) whatever the flux units.
    ngood = np.maximum(good.sum(axis=1, keepdims=True), 1)
    w = w / np.maximum(w.sum(axis=1, keepdims=True) / ngood, np.finfo(float).tiny)
    fz = np.where(good, f, 0.0)
    x = 2.0 * (wave - wave[0]) / (wave[-1] - wave[0]) - 1.0
    V = np.polynomial.legendre.legvander(x, degree)  # (npix, k)
    k = degree + 1
    scale = np.sqrt(w)
    # Residuals below ~1e-6 of the flux level count as zero (noise-free synthetic spectra).
    floor = 1e-6 * np.nanmedian(np.where(good, np.abs(fz), np.nan), axis=1, keepdims=True)
    floor = np.nan_to_num(floor, nan=0.0) + np.finfo(float).tiny

    # Plain C einsum loops, not BLAS: the products are tiny (nspec·npix·k²), and multithreaded BLAS on
    # them can stall for seconds when torch's OpenMP pool shares the cores.
    VV = (V[:, :, None] * V[:, None, :]).reshape(V.shape[0], k * k)  # outer products per pixel

    def fit(sel):
        ws = w * sel
        A = np.einsum("sp,pq->sq", ws, VV, optimize=False).reshape(-1, k, k)
        b = np.einsum("sp,pk->sk", ws * fz, V, optimize=False)
        ridge = 1e-12 * np.trace(A, axis1=1, axis2=2)[:, None, None] * np.eye(k) + 1e-300 * np.eye(k)
        coef = np.linalg.solve(A + ridge, b[..., None])[..., 0]
        return np.einsum("sk,pk->sp", coef, V, optimize=False)

    keep = good.copy()
    done = np.zeros(f.shape[0], dtype=bool)
    min_n = np.maximum(np.ceil(min_keep * good.sum(axis=1)), k + 1)
    cont = fit(keep)
    for _ in range(max_iter):
        r = (fz - cont) * scale
        nkeep = np.maximum(keep.sum(axis=1, keepdims=True), 1)
        sig = np.sqrt((keep * r * r).sum(axis=1, keepdims=True) / nkeep)
        sig = np.maximum(sig, floor)
        new = good & (r > -low * sig) & (r < high * sig)
        # Freeze spectra that converged or would drop below min_keep pixels.
        stop = np.all(new == keep, axis=1) | (new.sum(axis=1) < min_n)
        done |= stop
        if done.all():
            break
        keep = np.where(done[:, None], keep, new)
        cont = np.where(done[:, None], cont, fit(keep))
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = f / cont
        norm_ivar = None
        if ivar is not None:
            norm_ivar = np.where(good & (cont > 0), iv * cont * cont, 0.0)
    if one:
        return norm[0], (None if norm_ivar is None else norm_ivar[0]), cont[0]
    return norm, norm_ivar, cont


# --------------------------------------------------------------------------------------------
# One call for every spectrum
# --------------------------------------------------------------------------------------------
class Spectra(NamedTuple):
    """Spectra on an instrument grid, continuum-normalized.

    ``flux`` is flux / continuum, with masked pixels set to 1.0 (the continuum) so arrays can go
    straight into a network; ``mask`` (True = unusable) and ``ivar`` (0 there) say which they are.
    ``ivar`` is None when no ivar was given (noise-free synthetic spectra). ``continuum`` is in the
    input flux units.
    """

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray | None
    mask: np.ndarray
    continuum: np.ndarray


def to_instrument(
    wave,
    flux,
    instrument,
    ivar=None,
    mask=None,
    *,
    medium: str,
    source_resolution=None,
    source_fwhm=None,
    source="<array>",
    normalize: bool = True,
    continuum: dict | None = None,
    nsigma: float = 5.0,
    min_coverage: float = 0.5,
    max_uncovered: float = 0.0,
    pixel_in_lsf: bool = False,
) -> Spectra:
    """Put spectra on ``instrument``'s grid: the one pipeline for synthetic and observed spectra.

    1. validate (:func:`check_spectrum`; errors name ``source``) against the instrument window, of
       which up to ``max_uncovered`` (a share of its width; default none) may lie beyond the data's
       ends: those output pixels come back masked, like pixels under NaN flux;
    2. crop to the window plus the kernel reach, convert air ↔ vacuum if ``medium`` (the input's)
       differs from the instrument's;
    3. degrade from the source LSF (``source_resolution`` R, ``source_fwhm`` Å, or None = native) to
       the instrument LSF and resample flux-conservingly — one cached sparse matmul for the batch;
       an input already at the instrument's LSF (observed MILES → MILES) is only resampled; with
       ``pixel_in_lsf`` the output pixel's width is counted in the instrument's FWHM (:func:`kernel_fwhm`);
    4. continuum-normalize with :func:`continuum_normalize` (keyword overrides in ``continuum``)
       unless ``normalize`` is False (then ``continuum`` is ones).

    ``flux`` is ``(npix,)`` or ``(nspec, npix)``; outputs have the same leading shape.
    """
    instrument = get_instrument(instrument)
    grid = instrument.wavelength_grid()
    edges = pixel_edges(grid)
    kern = kernel_fwhm(grid, instrument, source_resolution, source_fwhm, source, pixel_in_lsf)
    # The window, in the input's medium, that the input must cover.
    window = convert_medium(edges[[0, -1]], instrument.medium, medium)
    wave = _check_wave(wave, source, window, max_uncovered)
    _check_companions(wave, flux, ivar, mask, source)  # on the full arrays: corrupt data anywhere is an error
    reach = nsigma * FWHM_TO_SIGMA * float(kern.max()) + 2.0  # + 2 Å: slack for the medium shift
    start = max(int(np.searchsorted(wave, window[0] - reach)) - 2, 0)
    stop = min(int(np.searchsorted(wave, window[1] + reach, "right")) + 2, wave.size)
    flux = np.asarray(flux)
    crop = (..., slice(start, stop))
    checked = check_spectrum(
        wave[start:stop],
        flux[crop],
        None if ivar is None else np.asarray(ivar)[crop],
        source=source,
        window=window,
        mask=None if mask is None else np.asarray(mask)[crop],
        max_uncovered=max_uncovered,
    )
    wave_c = convert_medium(checked.wave, medium, instrument.medium)
    op = build_operator(wave_c, grid, kern, nsigma)
    f, iv, m = op.apply(checked.flux, ivar=checked.ivar, mask=checked.mask, min_coverage=min_coverage)
    if normalize:
        kw = dict(continuum or {})
        f, iv, cont = continuum_normalize(grid, f, iv, m, **kw)
        m = m | ~np.isfinite(f) | ~(cont > 0)
    else:
        cont = np.ones_like(f)
    f = np.where(m, 1.0 if normalize else np.nan, f)
    if iv is not None:
        iv = np.where(m, 0.0, iv)
    return Spectra(grid, f, iv, m, cont)
