"""remap_lib.prediction.preparation: the LSF and RV options' ranges and one rule for missing pixels."""

from __future__ import annotations

import numpy as np
import pytest
from toydata import INSTRUMENT
from toymodel import toy_ensemble

from remap_lib import Predictor

W = INSTRUMENT.wavelength_grid()
F = 1.0 - 0.5 * np.exp(-0.5 * ((W - 5050.0) / 1.5) ** 2)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor(toy_ensemble(tmp_path_factory.mktemp("model")))


@pytest.mark.parametrize("option, value, words", [
    ("fwhm", 0.0, "fwhm 0 Å is out of range: this model needs 0 < FWHM <= 2.5 Å"),
    ("fwhm", 3.0, "fwhm 3 Å is out of range: this model needs 0 < FWHM <= 2.5 Å (the tiny LSF, FWHM 2.5 Å over "
                  "5000-5114 Å); wider LSFs cannot be sharpened"),
    ("fwhm", float("nan"), "fwhm nan Å is out of range"),
    ("resolution", -5.0, "resolution -5 is out of range: this model needs R >= 2045.72"),
    ("resolution", 1000.0, "resolution 1000 is out of range"),
])
def test_lsf_options_out_of_range(predictor, option, value, words):
    with pytest.raises(ValueError) as err:
        predictor.predict((W, F), **{option: value})
    assert words in str(err.value)


def test_lsf_options_at_the_limits_are_fine(predictor):
    assert predictor.predict((W, F), fwhm=2.5)["error"][0] == ""
    assert predictor.predict((W, F), resolution=float(np.max(W / 2.5)))["error"][0] == ""


def test_uncovered_edge_and_nan_padding_are_one_rule(predictor):
    """Data that stop 5 pixels short of the window predict exactly as the same data padded with NaN."""
    padded = F.copy()
    padded[:5] = np.nan
    table = predictor.predict([(W[5:], F[5:]), (W, padded), (W, F)])
    assert list(table["error"]) == ["", "", ""]
    assert table["masked_fraction"][0] == table["masked_fraction"][1] == pytest.approx(5 / W.size)
    np.testing.assert_allclose(table["teff_median"][0], table["teff_median"][1], rtol=1e-5)
    assert table["flags"][0].split(";")[0] == table["flags"][1].split(";")[0] == "partial_coverage"
    assert "data stop 4.5 Å short of the window's blue end (4999.55 Å, air): padded and masked" in table["notes"][0]
    assert "partial_coverage" not in table["flags"][2] and table["masked_fraction"][2] == 0


def test_too_much_missing_is_refused_and_says_what_would_fix_it(predictor):
    flux = F.copy()
    flux[: int(0.71 * W.size)] = np.nan
    late = W >= W[0] + 15.0  # 15.45 Å of the 115.2 Å window beyond the data
    table = predictor.predict([(W, flux), (W[late], F[late]), (W, F)])
    assert "% of the window 4999.55–5114.75 Å has no usable data (beyond the data's ends, NaN, masked or ivar " \
           "0); remap predicts with at most 10 % missing. To fix:" in table["error"][0]
    assert table["error"][0].startswith(f"{100 * int(0.71 * W.size) / W.size:.1f} % of the window")
    assert ("window 4999.55–5114.75 Å not covered (data span 5015.3–5114.3 Å): 15.3 Å at the blue end lies "
            "beyond the data (13.3 % of the window; at most 10 %, 11.52 Å, is padded and masked). To fix: give a "
            "spectrum reaching within 11.52 Å of the window's ends in total") in table["error"][1]
    assert np.all(np.isnan(table["teff_median"][:2])) and table["error"][2] == ""


@pytest.mark.parametrize("rv", [5e4, -3000.1, float("nan"), [10.0, float("inf")]])
def test_rv_out_of_range_is_refused_with_the_range(predictor, rv):
    spectra = [(W, F), (W, F)]
    with pytest.raises(ValueError, match=r"km/s is out of range: \|rv\| must be at most 3000 km/s"):
        predictor.predict(spectra, rv=rv)


def test_rv_at_the_limit_is_fine(predictor):
    from remap_lib.spectra.instruments import C_KMS

    shifted = W * (1 - 3000 / C_KMS)  # blueshifted by 3000 km/s: --rv -3000 brings it back
    row = predictor.predict((shifted, F), rv=-3000)[0]
    assert row["error"] == "" and "rv = -3000 km/s" in row["notes"]
