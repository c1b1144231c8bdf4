"""Baselines on toy data: The Cannon on an exactly quadratic model, the χ² fit on a smooth grid."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from remap_lib.evaluation.baselines import CannonBaseline, Chi2GridFit, clean_inputs

LO = np.array([4500.0, 3.5, -1.0])
HI = np.array([6500.0, 5.0, 0.5])


def _quadratic_flux(labels, coef):
    x = (labels - LO) / (HI - LO) - 0.5  # ~[-0.5, 0.5]
    terms = [np.ones(len(x))] + [x[:, i] for i in range(3)] + \
            [x[:, i] * x[:, j] for i in range(3) for j in range(i, 3)]
    return np.column_stack(terms) @ coef  # (n, n_pix)


def test_clean_inputs_masks_bad_pixels():
    flux = np.array([[1.0, np.nan, 0.9, 0.8]])
    ivar = np.array([[np.inf, 1.0, -1.0, 4.0]])
    f, iv = clean_inputs(flux, ivar)
    assert iv[0, 1] == 0 and iv[0, 2] == 0 and f[0, 1] == 0 and iv[0, 0] == 1e12 and iv[0, 3] == 4.0


def test_cannon_recovers_labels_of_exact_quadratic_model():
    rng = np.random.default_rng(1)
    n_pix = 100
    coef = np.vstack([np.ones(n_pix), 0.2 * rng.normal(size=(9, n_pix))])
    coef[0] += 0.05 * rng.normal(size=n_pix)
    train = LO + (HI - LO) * rng.random((200, 3))
    test = LO + 0.1 * (HI - LO) + 0.8 * (HI - LO) * rng.random((20, 3))
    sigma = 1e-4
    f_train = _quadratic_flux(train, coef) + sigma * rng.normal(size=(200, n_pix))
    f_test = _quadratic_flux(test, coef) + sigma * rng.normal(size=(20, n_pix))
    iv_train = np.full_like(f_train, sigma ** -2)
    iv_test = np.full_like(f_test, sigma ** -2)
    # NaN labels are dropped, masked pixels tolerated
    train[3, 1] = np.nan
    iv_train[5, 10:20] = 0.0
    iv_test[0, 40:50] = 0.0
    before = list(warnings.filters)
    model = CannonBaseline().fit(f_train, iv_train, train)
    assert list(warnings.filters) == before  # thecannon's global warning filters are undone
    assert model.n_train == 199
    pred, err = model.predict(f_test, iv_test, return_sigma=True)
    assert pred.shape == (20, 3) and err.shape == (20, 3)
    scale = HI - LO
    assert np.all(np.abs(pred - test) / scale < 2e-3), np.abs(pred - test).max(axis=0)
    assert np.all(np.isfinite(err)) and np.all(err > 0) and np.all(err / scale < 1e-2)


def _toy_grid():
    teff = np.array([4600.0, 4800.0, 5000.0, 5250.0, 5500.0])  # the step changes, as in MARCS
    logg = np.array([4.0, 4.5, 5.0])
    feh = np.array([-0.5, -0.25, 0.0, 0.25])
    nodes = np.array([(t, g, m) for t in teff for g in logg for m in feh])
    nodes = nodes[~((nodes[:, 0] == 5500.0) & (nodes[:, 1] == 5.0))]  # a missing corner
    wave = np.linspace(5000.0, 5100.0, 400)
    return nodes, wave


def _toy_spectrum(labels, wave):
    """Five Gaussian lines whose depths and widths vary smoothly, each with its own label mix."""
    labels = np.atleast_2d(labels)
    t, g, m = (labels[:, i:i + 1] for i in range(3))
    x = (t - 5000.0) / 1000.0
    a = (1.0, -1.0, 0.5, 1.0, -0.5)
    b = (0.5, 1.0, -1.0, 0.0, 1.5)
    c = (1.0, 0.0, -1.0, 0.5, 0.0)
    flux = np.ones((len(labels), wave.size))
    for k, centre in enumerate((5010.0, 5030.0, 5050.0, 5070.0, 5090.0)):
        depth = 0.3 + 0.2 * np.tanh(a[k] * x + b[k] * m)
        width = 0.8 + 0.3 * (g - 4.5) * c[k]
        flux -= depth * np.exp(-0.5 * ((wave - centre) / width) ** 2)
    return flux


@pytest.fixture(scope="module")
def chi2_fit():
    nodes, wave = _toy_grid()
    grid = _toy_spectrum(nodes, wave)
    ivar = np.ones_like(grid) * np.inf
    labels = np.vstack([nodes, [np.nan, 4.5, 0.0]])  # a NaN-labelled row is dropped
    grid = np.vstack([grid, grid[0]])
    ivar = np.vstack([ivar, ivar[0]])
    return Chi2GridFit(continuum_degree=1).fit(grid, ivar, labels), wave


def test_chi2_grid_exact_node(chi2_fit):
    fit, wave = chi2_fit
    node = np.array([[5000.0, 4.5, -0.25]])
    flux = _toy_spectrum(node, wave)
    pred = fit.predict(flux, np.full_like(flux, 1e4))
    np.testing.assert_array_equal(pred, node)


def test_chi2_grid_off_node_with_noise(chi2_fit):
    fit, wave = chi2_fit
    rng = np.random.default_rng(3)
    truth = np.array([[5130.0, 4.33, -0.12], [4730.0, 4.62, 0.07]])
    snr = 200.0
    flux = _toy_spectrum(truth, wave) * (1.02 + 0.01 * np.linspace(-1, 1, wave.size))  # continuum tilt
    flux = flux + rng.normal(size=flux.shape) / snr
    ivar = np.full_like(flux, snr ** 2)
    ivar[0, 100:110] = 0.0  # masked pixels
    pred, sigma = fit.predict(flux, ivar, return_sigma=True)
    spacing = np.array([[250.0, 0.5, 0.25], [200.0, 0.5, 0.25]])
    assert np.all(np.abs(pred - truth) < 0.15 * spacing), pred - truth
    assert np.isfinite(sigma).all()


def test_chi2_grid_coarse_only_returns_a_node(chi2_fit):
    fit, wave = chi2_fit
    fit2 = Chi2GridFit(continuum_degree=None, refine=False).fit(fit.grid_flux, np.ones_like(fit.grid_flux),
                                                                fit.grid_labels)
    flux = _toy_spectrum([[5200.0, 4.6, -0.2]], wave)
    pred = fit2.predict(flux, np.full_like(flux, 1e4))
    np.testing.assert_array_equal(pred[0], [5250.0, 4.5, -0.25])
