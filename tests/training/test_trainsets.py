"""Training sets: random splits, the DER_SNR noise estimate, label matching and the synthetic set."""

from __future__ import annotations

import numpy as np
import pytest

from remap_lib.data.sources.sme_grid import GRID_STORAGE, SyntheticGrid
from remap_lib.spectra.instruments import get_instrument
from remap_lib.training.trainsets import der_snr_noise, nearest_by_labels, split_rows, synthetic_set


# ---------------------------------------------------------------- split_rows
def test_split_rows_fractions_and_determinism():
    split = split_rows(100, test_fraction=0.1, val_fraction=0.25, seed=1)
    assert split.shape == (100,) and set(split) == {"train", "val", "test"}
    counts = {k: int((split == k).sum()) for k in ("train", "val", "test")}
    assert counts == {"train": 65, "val": 25, "test": 10}
    np.testing.assert_array_equal(split, split_rows(100, 0.1, 0.25, seed=1))
    assert not np.array_equal(split, split_rows(100, 0.1, 0.25, seed=2))
    # no row is in two splits, every row is in one
    test, val, train = (set(np.flatnonzero(split == k)) for k in ("test", "val", "train"))
    assert not (test & val or test & train or val & train) and len(test | val | train) == 100


def test_split_rows_edges():
    assert set(split_rows(7, 0.0, 0.0, seed=0)) == {"train"}
    assert (split_rows(10, 0.14, 0.0, seed=0) == "test").sum() == 1  # rounds to the nearest row
    with pytest.raises(ValueError, match="test_fraction"):
        split_rows(10, 0.5, 0.5, seed=0)
    with pytest.raises(ValueError):
        split_rows(10, -0.2, 0.1, seed=0)
    with pytest.raises(ValueError):  # a negative fraction must not pass because the sum is in range
        split_rows(10, -0.2, 0.5, seed=0)


# ---------------------------------------------------------------- der_snr_noise
def test_der_snr_recovers_white_noise_sigma():
    rng = np.random.default_rng(0)
    flux = 1.0 + 0.01 * rng.standard_normal((3, 4000))
    sigma = der_snr_noise(flux)
    assert sigma.shape == (3,)
    np.testing.assert_allclose(sigma, 0.01, rtol=0.1)
    assert der_snr_noise(flux[0]) == pytest.approx(sigma[0])  # 1-D input: one star


def test_der_snr_ignores_smooth_slopes_and_nan_pixels():
    wave = np.linspace(0, 1, 500)
    assert der_snr_noise(0.5 + 0.3 * wave)[0] == pytest.approx(0.0, abs=1e-12)  # second difference of a line
    rng = np.random.default_rng(1)
    flux = 0.5 + 0.3 * wave + 0.02 * rng.standard_normal(500)
    flux_nan = flux.copy()
    flux_nan[:50] = np.nan  # masked pixels passed as NaN
    assert der_snr_noise(flux_nan)[0] == pytest.approx(0.02, rel=0.15)


# ---------------------------------------------------------------- nearest_by_labels
def test_nearest_by_labels_scaled_distance_and_nan_candidates():
    candidates = np.array([[5000.0, 4.0, np.nan],   # would match exactly, but an unknown label never wins
                           [5150.0, 4.0, 0.0],      # 1.5 scale units away
                           [5000.0, 4.5, 0.0],      # 2 scale units away
                           [5000.0, 4.0, 0.1]])     # 1 scale unit away
    assert nearest_by_labels(np.array([5000.0, 4.0, 0.0]), candidates).tolist() == [3]
    queries = np.array([[5000.0, 4.0, 0.0], [5140.0, 4.0, 0.0], [5000.0, 4.6, 0.0]])
    assert nearest_by_labels(queries, candidates).tolist() == [3, 1, 2]
    # other scales change the answer: log g no longer counts
    assert nearest_by_labels(np.array([5000.0, 4.6, 0.0]), candidates, scales=np.array([100.0, 1e9, 0.1])).tolist() \
        == [2]


# ---------------------------------------------------------------- synthetic_set
LINE = 5300.0


@pytest.fixture(scope="module")
def grid():
    wave = GRID_STORAGE.wavelength_grid()
    depths = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    flux = 1.0 - depths[:, None] * np.exp(-0.5 * ((wave - LINE) / 0.3) ** 2)
    labels = np.column_stack([np.linspace(4000, 6000, 5), np.linspace(1, 5, 5), np.linspace(-1, 0.4, 5)])
    return SyntheticGrid(wave=wave, flux=flux.astype(np.float32), labels=labels, alpha=np.linspace(0, 0.4, 5),
                         vmicro=np.ones(5), model=np.array([f"node{i}" for i in range(5)]), resolution=11000.0,
                         provenance={"test": "fake grid"})


def test_synthetic_set_on_miles_pixels(grid):
    miles = get_instrument("miles")
    data = synthetic_set("miles", grid=grid, test_fraction=0.2, val_fraction=0.2, seed=0)
    assert data.flux.shape == (5, 780) and miles.npix == 780
    np.testing.assert_allclose(data.wave, miles.wavelength_grid())
    assert data.kind == "synthetic" and data.instrument.name == miles.name
    np.testing.assert_array_equal(data.labels, grid.labels)
    assert list(data.ids) == list(grid.model)
    np.testing.assert_array_equal(data.meta["alpha"], grid.alpha)
    assert sorted(data.meta["split"]) == ["test", "train", "train", "train", "val"]
    assert np.all(np.isinf(data.ivar[~data.mask])) and np.all(data.ivar[data.mask] == 0)
    assert data.provenance["grid"] == {"test": "fake grid"}
    # continuum at 1, the line where it was put, deeper for deeper input lines but broadened to 2.5 Å FWHM
    assert np.median(data.flux) == pytest.approx(1.0, abs=0.01)
    lo = data.wave[np.argmin(data.flux, axis=1)]
    np.testing.assert_allclose(lo, LINE, atol=1.0)
    depth = 1 - data.flux.min(axis=1)
    assert np.all(np.diff(depth) > 0) and np.all(depth < [0.1, 0.3, 0.5, 0.7, 0.9])


def test_synthetic_set_max_spectra_subset(grid):
    data = synthetic_set("miles", grid=grid, max_spectra=3, seed=4)
    assert len(data) == 3
    rows = [list(grid.model).index(i) for i in data.ids]
    assert rows == sorted(rows)
    np.testing.assert_array_equal(data.labels, grid.labels[rows])
    np.testing.assert_array_equal(data.ids, synthetic_set("miles", grid=grid, max_spectra=3, seed=4).ids)
