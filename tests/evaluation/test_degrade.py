"""Degraded copies for paired evaluation: the S/N reached, the same noise per star, nothing else touched."""

import numpy as np
import pytest

from remap_lib.evaluation.degrade import with_snr
from tests import toydata


def _flat(n=6, npix=2000, sigma0=0.0, seed=0):
    data = toydata.toy_set(n, seed=seed, kind="observed")
    rng = np.random.default_rng(seed)
    flux = 1.0 + sigma0 * rng.standard_normal((n, data.flux.shape[1]))
    from dataclasses import replace

    return replace(data, flux=flux.astype(data.flux.dtype), mask=np.zeros_like(data.mask),
                   ivar=np.ones_like(data.ivar))


def test_a_noise_free_spectrum_reaches_the_target_snr():
    data = _flat()
    noisy = with_snr(data, 20.0)
    assert np.std(noisy.flux - data.flux, axis=1) == pytest.approx(np.full(len(data), 0.05), rel=0.1)
    assert np.allclose(noisy.ivar, 1 / 0.05 ** 2)
    assert noisy.provenance["degraded"] == {"snr": 20.0, "salt": 0}
    assert np.array_equal(noisy.labels, data.labels) and list(noisy.ids) == list(data.ids)


def test_noise_adds_in_quadrature_and_a_noisier_spectrum_is_left_alone():
    data = _flat(sigma0=0.03)  # S/N 33 already
    added = np.std(with_snr(data, 20.0).flux - data.flux, axis=1)
    assert added == pytest.approx(np.full(len(data), np.sqrt(0.05 ** 2 - 0.03 ** 2)), rel=0.15)
    assert np.array_equal(with_snr(data, 50.0).flux, data.flux)


def test_each_star_gets_the_same_noise_in_any_set_and_order():
    data = _flat()
    whole = with_snr(data, 10.0)
    part = with_snr(data.select([4, 1]), 10.0)
    assert np.array_equal(part.flux, whole.flux[[4, 1]])
    assert not np.array_equal(whole.flux[0] - data.flux[0], whole.flux[1] - data.flux[1])
    assert not np.array_equal(with_snr(data, 10.0, salt=1).flux, whole.flux)


def test_the_target_must_be_a_positive_snr():
    with pytest.raises(ValueError, match="positive and finite"):
        with_snr(_flat(), 0.0)
