"""remap_lib.data.sources.linelist: the Gaia-ESO list in Turbospectrum format, read for PySME.

A hand-written two-species file checks the parsing and the damping conventions value by value;
the real list (fetched into the cache with pip on first use) checks the counts the book's data chapter
quotes.
"""

from __future__ import annotations

import numpy as np
import pytest

from remap_lib.data.sources.linelist import ges_linelist_path, read_ges_linelist
from remap_lib.fileio import RemapDataError

# Two species blocks laid out like the real file: header 'Z.iso' ion nlines, name line, rows
# λ_air χ_low log gf vdW g_up γ_rad ... (trailing columns ignored).
TINY = """\
'  26.000            '    1         3
'Fe I    LTE'
  5005.712  3.884 -0.120  725.240    9.0  1.51E+08 'p' 'd'   0.0    1.0 'Fe I  a  b'
  5001.863  3.882 -0.010   -7.570    7.0  1.00E+08 'p' 'd'   0.0    1.0 'Fe I  c  d'
  5002.500  2.000 -1.500    2.500    5.0  0.00E+00 'x' 'x'   0.0    1.0 'Fe I  e  f'
'  22.000            '    2         2
'Ti II   LTE'
  4998.000  1.200 -2.000    0.000    4.0  3.16E+08 'x' 'x'   0.0    1.0 'Ti II g h'
  5010.000  1.500 -0.500   20.000    6.0  1.00E+08 'x' 'x'   0.0    1.0 'Ti II i j'
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny_ges"
    path.write_text(TINY, encoding="latin-1")
    return path


def test_parse_tiny_file(tiny):
    frame = read_ges_linelist(tiny)
    assert len(frame) == 5
    # sorted by wavelength, species in PySME's "El ion" form
    np.testing.assert_array_equal(frame["wlcent"], [4998.0, 5001.863, 5002.5, 5005.712, 5010.0])
    assert list(frame["species"]) == ["Ti 2", "Fe 1", "Fe 1", "Fe 1", "Ti 2"]
    assert list(frame["ionization"]) == [2, 1, 1, 1, 2]
    np.testing.assert_allclose(frame["excit"], [1.2, 3.882, 2.0, 3.884, 1.5])
    np.testing.assert_allclose(frame["gflog"], [-2.0, -0.010, -1.5, -0.120, -0.5])
    # vdW: ABO-packed (> 20) and log γ6 (< 0) pass through; Unsöld factors (0..20) become 0
    np.testing.assert_allclose(frame["gamvw"], [0.0, -7.570, 0.0, 725.240, 0.0])
    # γ_rad in s⁻¹ → log10; 0 stays 0 (SME's classical value)
    np.testing.assert_allclose(frame["gamrad"], [np.log10(3.16e8), 8.0, 0.0, np.log10(1.51e8), 8.0])
    assert frame["gamrad"][1] == 8.0
    np.testing.assert_array_equal(frame["gamqst"], 0.0)
    np.testing.assert_array_equal(frame["lande"], 0.0)


def test_wave_range_filter(tiny):
    frame = read_ges_linelist(tiny, wave_range=(5000.0, 5005.712))  # both ends inclusive
    np.testing.assert_array_equal(frame["wlcent"], [5001.863, 5002.5, 5005.712])
    assert list(frame["species"]) == ["Fe 1"] * 3
    assert len(read_ges_linelist(tiny, wave_range=(6000.0, 7000.0))) == 0


def test_truncated_file_names_file(tmp_path):
    path = tmp_path / "cut_ges"
    path.write_text("".join(TINY.splitlines(keepends=True)[:-1]))  # last Ti II row gone
    with pytest.raises(RemapDataError, match="cut_ges.*1 lines short"):
        read_ges_linelist(path)


def test_block_shorter_than_header_names_file(tmp_path):
    lines = TINY.splitlines(keepends=True)
    path = tmp_path / "short_block"
    path.write_text("".join(lines[:4] + lines[5:]))  # Fe I block loses a row, Ti II follows
    with pytest.raises(RemapDataError, match="short_block: line 5: block ended 1 lines early"):
        read_ges_linelist(path)


def test_bad_name_line_and_empty_file(tmp_path):
    path = tmp_path / "bad_name"
    path.write_text(TINY.replace("'Ti II   LTE'", "'Ti XX   LTE'"))
    with pytest.raises(RemapDataError, match="bad_name: line 7: expected a species name"):
        read_ges_linelist(path)
    empty = tmp_path / "empty"
    empty.touch()
    with pytest.raises(RemapDataError, match="empty"):
        read_ges_linelist(empty)


@pytest.fixture(scope="module")
def real_path():
    try:
        return ges_linelist_path()
    except (RemapDataError, OSError) as err:
        pytest.skip(f"Gaia-ESO line list not available: {err}")


def test_real_list_counts(real_path):
    frame = read_ges_linelist(real_path)
    assert len(frame) == 104_296
    assert frame["wlcent"].min() > 4200 and frame["wlcent"].max() < 9200
    inside = read_ges_linelist(real_path, wave_range=(5000.0, 5700.0))
    assert len(inside) == 19_791
    assert set(frame["ionization"]) == {1, 2}
    assert np.isfinite(frame[["wlcent", "excit", "gflog", "gamrad", "gamvw"]].to_numpy()).all()
    # atomic lines only: no hydrogen, no molecules
    assert not frame["species"].str.startswith("H ").any()
    fe1 = inside[inside["species"] == "Fe 1"]
    assert 5001.863 in set(fe1["wlcent"])
