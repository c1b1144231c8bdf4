"""PHOENIX file names and grid nodes: the names the server uses, parsed and checked."""

from __future__ import annotations

import numpy as np
import pytest

from remap_lib.data.sources import phoenix as ph


def test_filename_and_relpath_examples():
    suffix = ".PHOENIX-ACES-AGSS-COND-2011-HiRes.fits"
    assert ph.phoenix_filename(5800, 4.5, 0.0) == "lte05800-4.50-0.0" + suffix
    assert ph.phoenix_filename(2300, 0.0, 0.0) == "lte02300-0.00-0.0" + suffix
    assert ph.phoenix_filename(12000, 6.0, 1.0) == "lte12000-6.00+1.0" + suffix
    assert ph.phoenix_relpath(5800, 4.5, -0.0) == (
        "HiResFITS/PHOENIX-ACES-AGSS-COND-2011/Z-0.0/lte05800-4.50-0.0" + suffix)
    assert ph.phoenix_relpath(5800, 4.5, 0.5) == (
        "HiResFITS/PHOENIX-ACES-AGSS-COND-2011/Z+0.5/lte05800-4.50+0.5" + suffix)
    assert ph.phoenix_relpath(5800, 4.5, -1.0) == (
        "HiResFITS/PHOENIX-ACES-AGSS-COND-2011/Z-1.0/lte05800-4.50-1.0" + suffix)
    assert ph.phoenix_relpath(5800, 4.5, 0.0, 0.2) == (
        "HiResFITS/PHOENIX-ACES-AGSS-COND-2011/Z-0.0.Alpha=+0.20/lte05800-4.50-0.0.Alpha=+0.20" + suffix)
    assert ph.phoenix_relpath(4000, 1.0, -1.5, -0.2) == (
        "HiResFITS/PHOENIX-ACES-AGSS-COND-2011/Z-1.5.Alpha=-0.20/lte04000-1.00-1.5.Alpha=-0.20" + suffix)
    assert ph.WAVE_RELPATH == "HiResFITS/WAVE_PHOENIX-ACES-AGSS-COND-2011.fits"


def test_parse_examples_and_path_prefix():
    assert ph.parse_phoenix_filename("lte05800-4.50+0.5.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits") == (
        5800, 4.5, 0.5, 0.0)
    node = ph.parse_phoenix_filename(
        "Z-0.0.Alpha=+0.20/lte05800-4.50-0.0.Alpha=+0.20.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits")
    assert node == (5800.0, 4.5, 0.0, 0.2)
    assert node.alpha == 0.2 and node.monh == 0.0 and np.signbit(node.monh) == 0


def test_round_trip_whole_grid():
    count = 0
    for teff in ph.GRID_TEFF:
        for logg in ph.GRID_LOGG:
            for monh in ph.GRID_MONH:
                alphas = [0.0]
                if 3500 <= teff <= 8000 and -3 <= monh <= 0 and logg in (0.0, 4.5):
                    alphas = ph.GRID_ALPHA
                for alpha in alphas:
                    name = ph.phoenix_filename(teff, logg, monh, alpha)
                    node = ph.parse_phoenix_filename(name)
                    assert node == (teff, logg, monh, alpha)
                    assert ph.phoenix_filename(*node) == name
                    rel = ph.phoenix_relpath(*node)
                    assert rel.endswith("/" + name)
                    assert rel.split("/")[2] == ph.phoenix_folder(monh, alpha)
                    count += 1
    assert count > 8000


def test_logg_sign_convention():
    # PHOENIX writes "-log g": a '-' before log g means a positive log g, '+' a negative one.
    name = ph.phoenix_filename(5800, -0.5, 0.0, validate=False)
    assert name.startswith("lte05800+0.50-0.0.")
    assert ph.parse_phoenix_filename(name).logg == -0.5
    assert ph.parse_phoenix_filename("lte05800-4.50-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits").logg == 4.5
    with pytest.raises(ValueError, match="log g"):
        ph.validate_node(5800, -0.5, 0.0)


@pytest.mark.parametrize("name", [
    "lte5800-4.50-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits",       # 4-digit Teff
    "lte05800-4.5-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits",       # one decimal log g
    "lte05800-4.50+0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits",      # solar must be -0.0
    "lte05800-4.50-0.0.Alpha=+0.2.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits",
    "lte05800-4.50-0.0.Alpha=+0.00.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits",  # alpha 0 has no suffix
    "lte05800+0.00-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits",      # log g 0 is written -0.00
    "lte05800-4.50-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits.gz",
    "WAVE_PHOENIX-ACES-AGSS-COND-2011.fits",
])
def test_parse_rejects_noncanonical(name):
    with pytest.raises(ValueError):
        ph.parse_phoenix_filename(name)


def test_validation_lists_nearest_values():
    with pytest.raises(ValueError, match=r"Teff=5850.*nearest: 5800, 5900"):
        ph.validate_node(5850, 4.5, 0.0)
    with pytest.raises(ValueError, match=r"Teff=7100.*nearest: 7000, 7200"):
        ph.validate_node(7100, 4.5, 0.0)
    with pytest.raises(ValueError, match=r"log g=4.3.*nearest: 4.00, 4.50"):
        ph.validate_node(5800, 4.3, 0.0)
    with pytest.raises(ValueError, match=r"\[M/H\]=-2.5.*nearest: -3.0, -2.0"):
        ph.validate_node(5800, 4.5, -2.5)
    with pytest.raises(ValueError, match=r"\[alpha/M\]=0.3.*nearest: \+0.20, \+0.40"):
        ph.validate_node(5800, 4.5, 0.0, 0.3)
    with pytest.raises(ValueError, match=r"exist only for 3500 <= Teff <= 8000"):
        ph.validate_node(9000, 4.5, 0.0, 0.4)
    with pytest.raises(ValueError, match=r"Teff=13000"):
        ph.phoenix_filename(13000, 4.5, 0.0)
    assert ph.validate_node("5800", 4.5, -0.0) == (5800.0, 4.5, 0.0, 0.0)
