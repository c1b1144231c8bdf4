"""Preprocessing: LSF degradation, resampling, continuum, validation through the pipeline, to_instrument.

Expected values are computed independently of the code under test: Gaussian fits with scipy,
analytic integrals, PyAstronomy + spectres.
"""

import numpy as np
import pytest
from scipy.optimize import curve_fit

from remap_lib.fileio import RemapDataError
from remap_lib.spectra.instruments import MARVELS, MILES, Instrument
from remap_lib.spectra.preprocess import (
    Spectra,
    check_spectrum,
    continuum_normalize,
    degrade,
    kernel_fwhm,
    resample,
    to_instrument,
)

SIG2FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


def fitted_fwhm(wave, depth):
    """FWHM (Å) of a Gaussian fitted to an absorption depth profile."""

    def gauss(x, a, mu, sig):
        return a * np.exp(-0.5 * ((x - mu) / sig) ** 2)

    p0 = (depth.max(), wave[np.argmax(depth)], 0.2)
    (a, mu, sig), _ = curve_fit(gauss, wave, depth, p0=p0)
    return abs(sig) * SIG2FWHM, mu


# ------------------------------------------------------------------------------ LSF degradation
def test_delta_line_to_R11000():
    w = np.arange(5200.0, 5300.0, 0.004)  # fine grid (R ≈ 1.3M sampling)
    flux = np.ones_like(w)
    flux[np.argmin(np.abs(w - 5250.0))] = 0.0  # a one-pixel "delta" line
    fine = Instrument("fine", 5246.0, 5254.0, medium="vacuum", resolution=11000, velocity_pixel=0.3)
    out, _, mask = degrade(w, flux, fine)
    assert not mask.any()
    fwhm, mu = fitted_fwhm(fine.wavelength_grid(), 1.0 - out)
    assert abs(mu - 5250.0) < 0.004
    assert abs(fwhm / (5250.0 / 11000) - 1) < 0.02
    # the line's equivalent width (0.004 Å) is conserved
    ew = np.sum((1 - out) * np.diff(np.r_[fine.wavelength_grid(), np.nan])[:-1].mean())
    assert abs(ew / 0.004 - 1) < 1e-3


def test_R500000_source_to_R11000():
    w = 5000.0 * np.exp(np.arange(0, np.log(5500 / 5000), 1e-6))  # PHOENIX-like Δλ/λ = 1e-6
    src_fwhm = 5250.0 / 500_000
    flux = 1 - 0.5 * np.exp(-0.5 * ((w - 5250.0) / (src_fwhm / SIG2FWHM)) ** 2)
    fine = Instrument("fine", 5246.0, 5254.0, medium="vacuum", resolution=11000, velocity_pixel=0.5)
    out, _, _ = degrade(w, flux, fine, source_resolution=500_000)
    fwhm, _ = fitted_fwhm(fine.wavelength_grid(), 1.0 - out)
    assert abs(fwhm / (5250.0 / 11000) - 1) < 0.01


def test_R11000_to_fwhm_2p5():
    w = np.arange(5200.0, 5300.0, 0.01)
    src = 5250.0 / 11000
    flux = 1 - 0.6 * np.exp(-0.5 * ((w - 5250.0) / (src / SIG2FWHM)) ** 2)
    target = Instrument("fwhm2.5", 5235.0, 5265.0, medium="vacuum", fwhm=2.5, pixel=0.02)
    out, _, _ = degrade(w, flux, target, source_resolution=11000)
    fwhm, _ = fitted_fwhm(target.wavelength_grid(), 1.0 - out)
    assert abs(fwhm - 2.5) < 0.01 * 2.5


def test_cannot_sharpen():
    w = np.arange(4990.0, 5710.0, 0.05)
    with pytest.raises(RemapDataError, match="cannot sharpen") as err:
        degrade(w, np.ones_like(w), MARVELS, source_resolution=5000, source="lowres.fits")
    assert "lowres.fits" in str(err.value)


def test_matches_pyastronomy_and_spectres_constant_fwhm():
    """Constant-FWHM kernel on an even grid: PyAstronomy's broadGaussFast is exact there."""
    from PyAstronomy import pyasl
    from spectres import spectres

    rng = np.random.default_rng(3)
    w = np.arange(5000.0, 5200.0, 0.01)
    centres = rng.uniform(5000, 5200, 150)
    tau = sum(rng.uniform(0.1, 1.0) * np.exp(-0.5 * ((w - c) / 0.05) ** 2) for c in centres)
    flux = np.exp(-tau)
    target = Instrument("t", 5020.0, 5180.0, medium="vacuum", fwhm=1.0, pixel=0.25)
    ours, _, _ = degrade(w, flux, target)
    broad = pyasl.broadGaussFast(w, flux, 1.0 / SIG2FWHM, edgeHandling="firstlast", maxsig=8.0)
    ref = spectres(target.wavelength_grid(), w, broad, verbose=False)
    assert np.max(np.abs(ours - ref)) < 5e-5  # measured 9e-6


# ------------------------------------------------------------------------------ resampling
def _integral(edges, values, lo, hi):
    """∫_lo^hi of a piecewise-constant function, from its cumulative integral at the edges."""
    cum = np.r_[0.0, np.cumsum(values * np.diff(edges))]
    return np.interp(hi, edges, cum) - np.interp(lo, edges, cum)


def test_resample_conserves_flux():
    rng = np.random.default_rng(1)
    w_in = np.cumsum(rng.uniform(0.01, 0.05, 20_000)) + 5000.0  # irregular grid
    flux = rng.uniform(0.5, 2.0, (2, w_in.size))
    w_out = np.linspace(w_in[10], w_in[-10], 1111)
    out, ivar, mask = resample(w_in, flux, w_out)
    assert ivar is None and not mask.any()
    e_in = np.r_[1.5 * w_in[0] - 0.5 * w_in[1], 0.5 * (w_in[1:] + w_in[:-1]), 1.5 * w_in[-1] - 0.5 * w_in[-2]]
    e_out = np.r_[1.5 * w_out[0] - 0.5 * w_out[1], 0.5 * (w_out[1:] + w_out[:-1]), 1.5 * w_out[-1] - 0.5 * w_out[-2]]
    for s in range(2):
        expected = _integral(e_in, flux[s], e_out[0], e_out[-1])
        got = np.sum(out[s] * np.diff(e_out))
        assert abs(got / expected - 1) < 1e-6
        # and pixel by pixel
        per_pixel = _integral(e_in, flux[s], e_out[:-1], e_out[1:]) / np.diff(e_out)
        assert np.allclose(out[s], per_pixel, rtol=1e-9)


def test_resample_ivar_and_mask():
    w_in = 5000.0 + np.arange(8.0)
    w_out = 5000.5 + 2.0 * np.arange(4)  # each output pixel = exactly 2 input pixels
    flux = np.array([1.0, 3.0, 2.0, 2.0, 5.0, np.nan, 4.0, 4.0])
    ivar = np.full(8, 4.0)
    mask = np.zeros(8, bool)
    mask[6:] = True
    out, iv, m = resample(w_in, flux, w_out, ivar=ivar, mask=mask)
    assert np.allclose(out[:2], [2.0, 2.0]) and np.allclose(iv[:2], 8.0)  # averaging 2 doubles ivar
    assert out[2] == 5.0 and iv[2] == 4.0 and not m[2]  # NaN pixel excluded, half coverage kept
    assert m[3] and iv[3] == 0 and np.isnan(out[3])  # fully masked
    # unequal variances: var = (v1 + v2) / 4
    out, iv, _ = resample(w_in[:4], np.ones(4), w_out[:2], ivar=np.array([1.0, 4.0, 1.0, 1.0]))
    assert np.isclose(iv[0], 1.0 / ((1.0 + 0.25) / 4.0))


def test_resample_out_of_range_masked():
    w_in = np.linspace(5000, 5100, 1001)
    out, _, mask = resample(w_in, np.ones_like(w_in), np.linspace(5050, 5200, 151))
    assert not mask[0] and mask[-1] and np.isnan(out[-1])
    assert np.allclose(out[~mask], 1.0)


# ------------------------------------------------------------------------------ continuum
def test_continuum_normalize_recovers_tilted_continuum():
    rng = np.random.default_rng(7)
    g = MARVELS.wavelength_grid()
    x = (g - 5350.0) / 350.0
    nspec = 4
    true_cont = np.stack([1e5 * (1.0 + t * x + 0.05 * x**2) for t in (-0.3, 0.0, 0.2, 0.4)])
    lines = np.ones((nspec, g.size))
    for s in range(nspec):
        for c in rng.uniform(5000, 5700, 400):  # ~one line per 1.75 Å at R=11000
            lines[s] *= 1 - rng.uniform(0.05, 0.7) * np.exp(-0.5 * ((g - c) / 0.2) ** 2)
    snr = 200.0
    sigma = true_cont * lines / snr
    flux = true_cont * lines + sigma * rng.standard_normal(sigma.shape)
    ivar = 1.0 / sigma**2
    norm, norm_ivar, cont = continuum_normalize(g, flux, ivar)
    assert np.max(np.abs(cont / true_cont - 1)) < 0.01
    assert np.allclose(norm, flux / cont)
    assert np.allclose(norm_ivar, ivar * cont**2)
    # without ivar, single spectrum (1-D): same answer to the same tolerance
    n1, iv1, c1 = continuum_normalize(g, flux[0])
    assert iv1 is None and c1.shape == g.shape
    assert np.max(np.abs(c1 / true_cont[0] - 1)) < 0.01


# ------------------------------------------------------------------------------ validation
GOOD_WAVE = np.linspace(4900.0, 5800.0, 3000)


@pytest.mark.parametrize(
    "wave, flux, ivar, words",
    [
        (GOOD_WAVE[::-1], np.ones(3000), None, "not monotonically increasing"),
        (np.r_[GOOD_WAVE[:10], GOOD_WAVE[9:]], np.ones(3001), None, "duplicated wavelengths"),
        (GOOD_WAVE, np.full(3000, np.nan), None, "all NaN"),
        (GOOD_WAVE / 10.0, np.ones(3000), None, "looks like nm"),
        (GOOD_WAVE / 1e4, np.ones(3000), None, "looks like µm"),
        (np.linspace(5100.0, 5800.0, 3000), np.ones(3000), None, "not covered"),
        (GOOD_WAVE, np.ones(3000), np.r_[-1.0, np.ones(2999)], "negative inverse variance"),
        (GOOD_WAVE, np.ones(2999), None, "shape mismatch"),
        (GOOD_WAVE, np.ones(3000), np.ones(10), "shape mismatch"),
    ],
)
def test_bad_input_named(wave, flux, ivar, words):
    with pytest.raises(RemapDataError, match=words) as err:
        check_spectrum(wave, flux, ivar, source="star42.fits", window=(5000.0, 5700.0))
    assert str(err.value).startswith("star42.fits: ")
    # the pipeline reports the same problem, naming the same source
    with pytest.raises(RemapDataError, match=words) as err:
        to_instrument(wave, flux, MARVELS, ivar=ivar, medium="vacuum", source="star42.fits")
    assert "star42.fits" in str(err.value)


# ------------------------------------------------------------------------------ pipeline
def test_miles_observed_is_only_resampled():
    """MILES native grid, air, FWHM 2.5 Å -> MILES profile: exactly the same pixels back."""
    rng = np.random.default_rng(5)
    w = 3540.5 + 0.9 * np.arange(4300)
    flux = 1e-13 * (1.0 + 0.2 * rng.standard_normal((2, w.size)))
    flux[0, 2000] = np.nan  # inside the window (λ = 5340.5)
    out = to_instrument(w, flux, "miles", medium="air", source_fwhm=2.5, source="miles", normalize=False)
    assert isinstance(out, Spectra)
    i0 = int(round((out.wave[0] - 3540.5) / 0.9))
    expect = flux[:, i0 : i0 + out.wave.size]
    ok = ~out.mask
    assert np.allclose(out.flux[ok], expect[ok], rtol=1e-10)
    assert out.mask[0].sum() == 1 and out.mask[0, 2000 - i0] and not out.mask[1].any()
    assert np.all(out.continuum == 1)


def test_vacuum_line_lands_at_air_wavelength_on_miles():
    from PyAstronomy import pyasl

    w = 4900.0 * np.exp(np.arange(0, np.log(5800 / 4900), 2e-6))
    line_vac = 5300.0
    flux = 1 - 0.8 * np.exp(-0.5 * ((w - line_vac) / 0.01) ** 2)
    out = to_instrument(w, flux, MILES, medium="vacuum", normalize=False, source="phoenix")
    sel = np.abs(out.wave - 5298.5) < 8
    _, mu = fitted_fwhm(out.wave[sel], 1 - out.flux[sel])
    expected = pyasl.vactoair2(np.array([line_vac]), mode="ciddor")[0]
    assert abs(mu - expected) < 0.02  # 1/45 of a MILES pixel; the air-vacuum shift is 1.47 Å


def test_to_instrument_shapes_and_normalization():
    rng = np.random.default_rng(2)
    w = np.linspace(4940.0, 5760.0, 40_000)
    cont = 2.0 + (w - 5300) / 1000
    flux = np.stack([cont, 3 * cont]) * (1 + 0.001 * rng.standard_normal((2, w.size)))
    ivar = np.full(flux.shape, 1e4)
    out = to_instrument(w, flux, MARVELS, ivar=ivar, medium="air", source_resolution=30_000)
    assert out.flux.shape == out.ivar.shape == out.mask.shape == (2, MARVELS.npix)
    assert not out.mask.any()
    assert np.allclose(out.flux, 1.0, atol=0.01)
    one = to_instrument(w, flux[0], MARVELS, medium="air", source_resolution=30_000)
    assert one.flux.shape == (MARVELS.npix,) and one.ivar is None


# ------------------------------------------------------------------------------ partial coverage
def test_wcs_and_table_wavelengths_cover_the_same_window():
    """MILES cut to the model's own grid: the WCS arithmetic lands ~1e-12 Å inside the window's edge."""
    from remap_lib.spectra.preprocess import pixel_edges, uncovered
    from remap_lib.spectra.readers import fits_wcs_wavelengths

    window = pixel_edges(MILES.wavelength_grid())[[0, -1]]
    wcs = fits_wcs_wavelengths({"CRVAL1": 4999.4, "CDELT1": 0.9, "CRPIX1": 1.0}, 780, "star.fits")
    assert wcs[0] == pytest.approx(4999.4) and wcs.size == MILES.npix
    assert uncovered(wcs, window) == (0.0, 0.0)
    assert uncovered(MILES.wavelength_grid(), window) == (0.0, 0.0)
    a = to_instrument(wcs, np.ones(780), MILES, medium="air")
    b = to_instrument(MILES.wavelength_grid(), np.ones(780), MILES, medium="air")
    assert not a.mask.any() and not b.mask.any()


def test_uncovered_edge_is_padded_and_masked_up_to_the_limit():
    wave = np.arange(5000.0, 5720.0, 0.9)  # first pixel edge 4999.55 Å: 0.6 Å inside the window (4998.95 Å)
    with pytest.raises(RemapDataError, match=r"0\.6 Å at the blue end lies beyond the data"):
        to_instrument(wave, np.ones(wave.size), MILES, medium="air", source="s.fits")
    out = to_instrument(wave, np.ones(wave.size), MILES, medium="air", max_uncovered=0.1)
    assert out.mask[0] and not out.mask[1:].any()  # the first output pixel is 2/3 uncovered: masked
    np.testing.assert_allclose(out.flux, 1.0, rtol=1e-9)


def test_past_the_limit_says_what_would_fix_it():
    wave = np.arange(5100.0, 5720.0, 0.9)  # first edge 5099.55 Å: 100.6 Å (14.3 %) of the window missing
    with pytest.raises(RemapDataError) as err:
        to_instrument(wave, np.ones(wave.size), MILES, medium="air", max_uncovered=0.1, source="s.fits")
    text = str(err.value)
    assert text.startswith("s.fits: window 4998.95–5700.95 Å not covered")
    assert "100.6 Å at the blue end lies beyond the data (14.3 % of the window; at most 10 %, 70.2 Å, is padded" in text
    assert "To fix: give a spectrum reaching within 70.2 Å of the window's ends in total" in text


@pytest.mark.parametrize("centre", [5250.0, 5250.3, 5250.45])
def test_pixel_in_lsf_makes_lines_as_wide_as_the_instrument_on_its_pixels(centre):
    """Degraded and averaged over 0.9 Å pixels, a line measures 2.5 Å only if the pixel's share
    (FWHM² + 8 ln 2 · 0.9²/12 = 6.25 + 0.374 Å²) was taken off the kernel."""
    w = np.arange(5200.0, 5300.0, 0.01)
    src = 5250.0 / 11000
    flux = 1 - 0.6 * np.exp(-0.5 * ((w - centre) / (src / SIG2FWHM)) ** 2)
    miles_like = Instrument("miles-like", 5230.0, 5270.0, medium="vacuum", fwhm=2.5, pixel=0.9)
    grid = miles_like.wavelength_grid()
    as_quoted, _, _ = degrade(w, flux, miles_like, source_resolution=11000)
    pixel_in, _, _ = degrade(w, flux, miles_like, source_resolution=11000, pixel_in_lsf=True)
    assert fitted_fwhm(grid, 1.0 - as_quoted)[0] == pytest.approx(np.sqrt(6.25 + 0.3743), rel=0.005)
    assert fitted_fwhm(grid, 1.0 - pixel_in)[0] == pytest.approx(2.5, rel=0.005)
    # the kernel, by hand: sqrt(2.5² − 0.3743 − (5250/11000)²) at 5250 Å
    kern = kernel_fwhm(grid, miles_like, source_resolution=11000, pixel_in_lsf=True)
    assert kern[np.argmin(np.abs(grid - 5250.0))] == pytest.approx(np.sqrt(6.25 - 0.37430 - (5250.0 / 11000) ** 2),
                                                                   rel=1e-4)


def test_pixel_in_lsf_refuses_pixels_wider_than_the_lsf():
    coarse = Instrument("coarse", 5230.0, 5270.0, medium="vacuum", fwhm=0.5, pixel=0.9)  # 0.374 Å² > 0.25 Å²
    with pytest.raises(ValueError, match="pixels are too wide"):
        kernel_fwhm(coarse.wavelength_grid(), coarse, pixel_in_lsf=True)
    assert np.all(kernel_fwhm(coarse.wavelength_grid(), coarse) == 0.5)  # as quoted, the pixel is not counted
