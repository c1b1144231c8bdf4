"""remap_lib.evaluation.linewidth: exact broadening, the pixel's share, and a known width recovered."""

import itertools

import numpy as np
import pytest

from remap_lib.evaluation.linewidth import best_broadening, broaden, grid_width, pixel_share, width_ratio

STEP = 0.9
WAVE = 5000.0 + STEP * np.arange(400)
CENTRES = WAVE[20:-20:23]


def lines(fwhm: float, depths) -> np.ndarray:
    """Normalized spectrum of Gaussian absorption lines at CENTRES seen through an LSF of ``fwhm`` Å, sampled
    at pixel centres: ``depths`` are their depths at 2.5 Å, so a wider LSF keeps each line's equivalent width."""
    sigma = fwhm / 2.3548
    profile = np.exp(-0.5 * ((WAVE[:, None] - CENTRES[None, :]) / sigma) ** 2) * (2.5 / fwhm)
    return 1.0 - profile @ np.asarray(depths)


def test_pixel_share_by_hand():
    # FWHM² grows by 8 ln 2 · Δλ²/12 = 5.5452 · 0.0675 = 0.3743 Å²: sqrt(6.6243 / 6.25) − 1 = 0.02951
    assert pixel_share(2.5, 0.9) == pytest.approx(0.02951, abs=1e-5)
    assert pixel_share(2.5, 1e-6) == pytest.approx(0.0, abs=1e-12)
    assert grid_width(2.5, 0.9) == pytest.approx(2.5 * 1.02951, rel=1e-5)
    assert grid_width(2.5, 0.9, pixel_in_lsf=True) == 2.5


def test_broadening_adds_in_quadrature_even_below_a_pixel():
    line = 1.0 - lines(2.5, np.full(len(CENTRES), 0.5))[None, :]
    out = 1.0 - broaden(1.0 - line, 0.6, STEP)
    k = slice(20 + 23 * 5 - 10, 20 + 23 * 5 + 11)  # one line, its neighbours far away
    x = WAVE[k] - CENTRES[5]

    def fwhm(profile):
        return np.sqrt(np.sum(profile * x**2) / np.sum(profile)) * 2.3548

    assert fwhm(out[0, k]) == pytest.approx(np.hypot(2.5, 0.6), rel=2e-3)
    masked = np.where(np.arange(len(WAVE)) == 7, np.nan, lines(2.5, np.full(len(CENTRES), 0.5)))
    assert np.isnan(broaden(masked, 0.6, STEP)[0, 7]) and np.isfinite(broaden(masked, 0.6, STEP)[0, 8])
    assert np.array_equal(broaden(masked, 0.0, STEP), masked[None, :], equal_nan=True)


@pytest.mark.parametrize("observed_fwhm", [2.5, 2.65, 2.35])
def test_a_known_width_difference_is_recovered(observed_fwhm):
    """Grid lines 2.5 Å wide; 'observed' spectra made of the same lines at another width, with noise."""
    rng = np.random.default_rng(1)
    depth_sets = rng.uniform(0.05, 0.6, size=(len(CENTRES), 3))
    axes = [np.linspace(0.0, 1.0, 4)] * 3
    labels = np.array(list(itertools.product(*axes)))
    grid = np.stack([lines(2.5, depth_sets @ lab / 2.0 + 0.05) for lab in labels])
    truth = labels[rng.choice(len(labels), 12, replace=False)]
    observed = np.stack([lines(observed_fwhm, depth_sets @ lab / 2.0 + 0.05) for lab in truth])
    observed += rng.normal(0.0, 1.0 / 300.0, observed.shape)
    best = best_broadening(observed, np.full(observed.shape, 300.0**2), grid, np.ones_like(grid), labels, STEP,
                           progress=False)
    ratio = width_ratio(best, grid_fwhm=2.5)
    assert np.median(ratio) == pytest.approx(2.5 / observed_fwhm, abs=0.005)
