"""Instrument profiles: grids, LSF, validation, YAML round trip and errors."""

import dataclasses

import numpy as np
import pytest

from remap_lib.constants import C_KMS
from remap_lib.fileio import RemapDataError
from remap_lib.spectra.instruments import MARVELS, MILES, Instrument, get_instrument


def test_marvels_grid():
    g = MARVELS.wavelength_grid()
    assert g.dtype == np.float64 and g.size == MARVELS.npix
    assert 4300 <= g.size <= 4500  # ≈ 4400 px
    assert np.all(np.diff(g) > 0)
    assert g[0] <= 5000 and g[-1] >= 5700 and g[1] > 5000 and g[-2] < 5700
    # log-linear: constant velocity step of 9 km/s
    dv = np.diff(np.log(g)) * C_KMS
    assert np.allclose(dv, 9.0, rtol=1e-9)
    # ≈ 3 pixels per resolution element
    ppr = (g[:-1] / 11000) / np.diff(g)
    assert 2.9 < ppr.mean() < 3.1


def test_miles_grid_aligned_to_native():
    g = MILES.wavelength_grid()
    assert g.size == MILES.npix == 780
    i = (g - 3540.5) / 0.9
    assert np.allclose(i, np.round(i), atol=1e-9)  # every pixel is a native MILES pixel
    assert g[0] <= 5000 < g[1] and g[-2] < 5700 <= g[-1]
    assert np.allclose(np.diff(g), 0.9)


def test_lsf_fwhm():
    assert np.allclose(MARVELS.lsf_fwhm([5500.0, 11000.0]), [0.5, 1.0])
    assert np.allclose(MILES.lsf_fwhm(np.array([5000.0, 5600.0])), 2.5)


def test_grid_without_origin_starts_at_wave_min():
    inst = Instrument("lin", 5000, 5010, pixel=0.5, fwhm=1.0)
    g = inst.wavelength_grid()
    assert g[0] == 5000 and g[-1] == 5010 and g.size == 21


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(resolution=1000, fwhm=1.0, pixel=1.0), "exactly one line-spread"),
        (dict(pixel=1.0), "exactly one line-spread"),
        (dict(resolution=1000, pixel=1.0, velocity_pixel=3.0), "exactly one pixel grid"),
        (dict(resolution=1000), "exactly one pixel grid"),
        (dict(resolution=-5, pixel=1.0), "resolution must be a positive"),
        (dict(resolution=1000, pixel=1.0, medium="water"), "medium"),
        (dict(resolution=1000, pixel=1000.0), "wider than the window"),
    ],
)
def test_validation(kwargs, words):
    with pytest.raises(ValueError, match=words):
        Instrument("bad", 5000, 5700, **kwargs)


def test_window_order():
    with pytest.raises(ValueError, match="below wave_max"):
        Instrument("bad", 5700, 5000, resolution=1000, pixel=1.0)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MARVELS.resolution = 5


def test_dict_and_yaml_round_trip(tmp_path):
    for inst in (MARVELS, MILES):
        assert Instrument.from_dict(inst.to_dict()) == inst
        path = inst.to_yaml(tmp_path / f"{inst.name}.yaml")
        back = Instrument.from_yaml(path)
        assert back == inst
        assert np.array_equal(back.wavelength_grid(), inst.wavelength_grid())
        assert get_instrument(str(path)) == inst
    assert not list(tmp_path.glob("*.part"))  # atomic write left no temporaries


def test_registry():
    assert get_instrument("MARVELS") is MARVELS
    assert get_instrument("miles") is MILES
    assert get_instrument(" Miles ") is MILES
    assert get_instrument(MILES) is MILES
    with pytest.raises(ValueError, match="unknown instrument 'apogee'"):
        get_instrument("apogee")


@pytest.mark.parametrize(
    "text, words",
    [
        ("name: x\nwave_min: [5000\n", "not valid YAML"),
        ("name: x\nwave_min: 5000\nwave_max: 5700\nresolutoin: 1000\npixel: 1\n", "resolutoin"),
        ("name: x\nwave_min: 5000\nwave_max: 5700\nresolution: 1000\n", "exactly one pixel grid"),
        ("- just\n- a list\n", "mapping"),
        ("wave_min: 5000\n", "missing required"),
    ],
)
def test_bad_yaml_names_file(tmp_path, text, words):
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    with pytest.raises(RemapDataError, match=words) as err:
        Instrument.from_yaml(path)
    assert str(path) in str(err.value)


def test_missing_and_empty_yaml(tmp_path):
    with pytest.raises(RemapDataError, match="does not exist") as err:
        get_instrument(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(err.value)
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    with pytest.raises(RemapDataError, match="empty") as err:
        Instrument.from_yaml(empty)
    assert "empty.yml" in str(err.value)
