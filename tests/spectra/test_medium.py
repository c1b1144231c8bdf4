"""remap_lib.spectra.medium: air/vacuum against published values, both ways, and specutils."""

import numpy as np
import pytest

from remap_lib.spectra.medium import air_to_vacuum, vacuum_to_air


def test_air_vacuum_round_trip():
    air = np.linspace(2000.0, 55000.0, 200_001)
    assert np.max(np.abs(vacuum_to_air(air_to_vacuum(air)) - air)) < 1e-4
    assert np.max(np.abs(air_to_vacuum(vacuum_to_air(air)) - air)) < 1e-4
    # below 2000 Å both are vacuum (IAU convention)
    assert np.array_equal(air_to_vacuum([1500.0, 1999.0]), [1500.0, 1999.0])


def test_air_to_vacuum_published_values():
    # VALD3 / N. Piskunov's published closed-form air→vacuum inverse of the Morton (2000) index
    # (https://www.astro.uu.se/valdwiki/Air-to-vacuum%20conversion), evaluated by hand here.
    lam = 5000.0
    s2 = (1e4 / lam) ** 2
    n = 1 + 0.00008336624212083 + 0.02408926869968 / (130.1065924522 - s2) + 0.0001599740894897 / (38.92568793293 - s2)
    assert abs(air_to_vacuum(lam) - lam * n) < 1e-4
    assert abs(air_to_vacuum(lam) - 5001.3948) < 1e-4
    # IDL astrolib AIRTOVAC documentation (Ciddor 1996): Kr line 6056.125 Å air -> 6057.8019 Å vacuum.
    assert abs(air_to_vacuum(6056.125) - 6057.8019) < 2e-4
    # Vacuum -> air of the same published number, opposite direction.
    assert abs(vacuum_to_air(6057.8019) - 6056.125) < 2e-4


def test_air_vacuum_agrees_with_specutils():
    # ours stays (see remap_lib/spectra/medium.py); it must give specutils' Morton (2000) numbers wherever both apply
    wcs_utils = pytest.importorskip("specutils.utils.wcs_utils")
    import astropy.units as u

    wave = np.linspace(2000.0, 25000.0, 20_001)
    assert np.max(np.abs(vacuum_to_air(wave) - wcs_utils.vac_to_air(wave * u.AA).value)) < 1e-6
    assert np.max(np.abs(air_to_vacuum(wave) - wcs_utils.air_to_vac(wave * u.AA, scheme="iteration").value)) < 1e-6
