"""remap_lib.spectra.checks: a batch names the spectrum that fails; NaN pixels are masked, not errors.

(Each refused input is tested with the source it names, through check_spectrum and to_instrument, in
test_preprocess.py.)"""

import numpy as np
import pytest

from remap_lib.fileio import RemapDataError
from remap_lib.spectra.checks import check_spectrum

GOOD_WAVE = np.linspace(4900.0, 5800.0, 3000)


def test_batch_with_one_all_nan_spectrum():
    flux = np.ones((3, GOOD_WAVE.size))
    flux[1] = np.nan
    with pytest.raises(RemapDataError, match=r"all NaN/inf \(spectrum 1 of 3\)"):
        check_spectrum(GOOD_WAVE, flux, source="batch")


def test_nan_pixels_become_masked():
    flux = np.ones(GOOD_WAVE.size)
    flux[[5, 500]] = np.nan
    ivar = np.ones_like(flux)
    ivar[7] = np.nan
    c = check_spectrum(GOOD_WAVE, flux, ivar, window=(5000, 5700))
    assert c.mask.sum() == 3 and np.all(c.ivar[[5, 7, 500]] == 0)
