"""remap_lib.spectra.lsf_operator: the operator is cached per grid and kernel, and a batch is its rows.

(Its weights are tested through degrade and resample in test_preprocess.py, against Gaussian fits,
analytic integrals, PyAstronomy and spectres.)"""

import numpy as np

from remap_lib.spectra.instruments import MARVELS
from remap_lib.spectra.lsf_operator import build_operator


def test_operator_is_cached_and_batched():
    w = np.arange(4990.0, 5710.0, 0.05)
    g = MARVELS.wavelength_grid()
    a = build_operator(w, g, MARVELS.lsf_fwhm(g) * 0.5)
    b = build_operator(w.copy(), g, MARVELS.lsf_fwhm(g) * 0.5)
    assert a is b
    rng = np.random.default_rng(0)
    flux = 1 + 0.1 * rng.standard_normal((3, w.size))
    batch, _, _ = a.apply(flux)
    single = np.stack([a.apply(f)[0] for f in flux])
    assert np.allclose(batch, single, rtol=0, atol=1e-14)
