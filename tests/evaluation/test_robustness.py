"""remap_lib.evaluation.robustness: the alterations, the RV estimate, and both measurements on toy stars."""

import numpy as np
import pytest

from remap_lib.data.dataset import LABEL_NAMES
from remap_lib.evaluation.robustness import add_noise, broaden, doppler, estimate_rv, tilt
from remap_lib.spectra.instruments import C_KMS


def test_tilt_is_the_stated_quadratic():
    wave = np.array([5000.0, 5350.0, 5700.0])
    _, lin = tilt(wave, np.ones(3), 0.3, "linear")
    np.testing.assert_allclose(lin, [0.7, 1.0, 1.3])
    _, quad = tilt(wave, np.full(3, 2.0), -0.3, "quadratic")
    np.testing.assert_allclose(quad, [1.4, 2.6, 1.4])


def test_doppler_and_noise():
    w, f = doppler(np.array([5000.0]), np.array([1.0]), 299.792458)
    assert w[0] == pytest.approx(5000.0 * (1 + 299.792458 / C_KMS)) and f[0] == 1.0
    wave = np.linspace(4990, 5710, 4000)
    _, noisy, ivar = add_noise(wave, np.full(wave.size, 4.0), 20.0, np.random.default_rng(0))
    assert np.std(noisy - 4.0) == pytest.approx(0.2, rel=0.05)  # σ = median/S/N
    np.testing.assert_allclose(ivar, 1 / 0.2**2)  # the flat input has no noise of its own


def test_broaden_widens_a_line_to_the_asked_fwhm():
    wave = np.arange(5000.0, 5100.0, 0.1)
    sigma = 2.5 / 2.3548
    _, f = broaden(wave, np.exp(-0.5 * ((wave - 5050) / sigma) ** 2), 2.5, 5.0)
    half = wave[f >= f.max() / 2]
    assert half[-1] - half[0] == pytest.approx(5.0, abs=0.2)


def test_estimate_rv_recovers_a_shift():
    grid = np.arange(5000.0, 5100.0, 0.5)
    lines = (5020.0, 5043.0, 5071.0, 5088.0)

    def spectrum(w):
        return 1 - sum(0.4 * np.exp(-0.5 * ((w - c) / 1.0) ** 2) for c in lines)

    templates = spectrum(grid)[None]
    wide = np.arange(4980.0, 5120.0, 0.5)
    for v in (-420.0, 0.0, 137.0):
        rv, peak = estimate_rv(wide * (1 + v / C_KMS), spectrum(wide) * (1 + 0.1 * (wide - 5050) / 70), grid,
                               templates)
        assert rv == pytest.approx(v, abs=3.0) and peak > 0.9
    # data just covering the window: shifts up to 20 % of it are tried, enough to find a small one
    assert estimate_rv(grid * (1 + 50 / C_KMS), spectrum(grid), grid, templates)[0] == pytest.approx(50, abs=3)
    assert np.isnan(estimate_rv(grid[:50], spectrum(grid[:50]), grid, templates)[0])  # a quarter: too little


def _stars(role):
    """Toy stars reaching beyond the toy window, one line whose depth follows Teff."""
    rng = np.random.default_rng({"validation": 1, "calibration": 2}[role])
    wave = np.arange(4980.0, 5140.0, 0.9)
    labels = np.column_stack([rng.uniform(4500, 6500, 10), rng.uniform(4, 4.6, 10), rng.uniform(-0.5, 0.3, 10)])
    depth = 0.2 + 0.4 * (labels[:, :1] - 4000) / 3000
    return labels, [(wave, f) for f in 1 - depth * np.exp(-0.5 * ((wave - 5050) / 1.5) ** 2)]


def test_measure_noise_on_toy_stars(tmp_path):
    from toymodel import toy_ensemble

    from remap_lib.evaluation.robustness import measure_noise

    report = measure_noise(toy_ensemble(tmp_path), levels=(20.0, 5.0), draws=1, stars=_stars, progress=False)
    assert report["fit_on"] == "validation"
    for name in LABEL_NAMES:
        factors = [f for _, f in report["table"][name]]
        assert factors[0] == 1.0 and factors == sorted(factors)  # never sharper at a lower S/N
    for role in ("validation", "calibration"):
        levels = report["roles"][role]["levels"]
        assert [row["snr"] for row in levels] == ["clean", 20.0, 5.0]
        # the S/N predict measures is the one added, or a little higher: rebinning onto the toy grid's
        # offset pixels averages neighbouring noise
        assert 4.5 < levels[2]["measured_snr"] < 5 * 1.3
        for row in levels:
            for name in LABEL_NAMES:
                assert row[name]["width68_widened"] >= row[name]["width68"] - 1e-9


def test_measure_curves_on_toy_stars(tmp_path):
    from toymodel import toy_ensemble

    from remap_lib.evaluation.robustness import FWHM_VALUES, RV_VALUES, TILT_AMPLITUDES, TILT_SHAPES, measure_curves

    report = measure_curves(toy_ensemble(tmp_path), stars=_stars, progress=False)
    assert len(report["tilt"]) == len(TILT_AMPLITUDES) * len(TILT_SHAPES)
    assert [r["rv"] for r in report["rv"]] == [0.0, *RV_VALUES]
    assert [r["fwhm"] for r in report["fwhm"]] == list(FWHM_VALUES)
    assert "corrected" not in report["rv"][1]  # the toy model has no detector, so no RV estimate
    for row in report["tilt"] + report["rv"][1:] + report["snr"] + report["fwhm"]:
        assert all(np.isfinite(row[n]) for n in LABEL_NAMES)
    over = report["undeclared_resolution"]["oversampled"]
    assert over["n"] == 10 and over["assumed"]["flagged"] == 1.0  # 0.1 Å pixels: 25 per 2.5 Å FWHM
