"""remap_lib.spectra.readers: users' spectra from FITS images/tables, ECSV/CSV and our HDF5 store."""

from __future__ import annotations

import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from toydata import toy_set

from remap_lib.data.dataset import write_dataset
from remap_lib.fileio import RemapDataError
from remap_lib.spectra.inputfiles import file_kind
from remap_lib.spectra.readers import (
    StoreSpectra,
    count_spectra,
    read_fits,
    read_spectra,
    read_store,
    read_table_file,
)

NPIX = 8
RTOL = 1e-9


def _image(path, data=None, extensions=(), **keys):
    """A FITS file whose primary HDU is ``data`` (default 1-D ramp) with header ``keys``."""
    data = np.linspace(1.0, 2.0, NPIX) if data is None else data
    hdu = fits.PrimaryHDU(np.asarray(data, dtype=np.float64))
    for key, value in keys.items():
        hdu.header[key] = value
    fits.HDUList([hdu, *extensions]).writeto(path)
    return path


def _pix():
    return np.arange(1, NPIX + 1, dtype=np.float64)


# -- FITS images: the wavelength WCS ------------------------------------------------------------
def test_linear_wcs_with_crpix_not_one(tmp_path):
    path = _image(tmp_path / "lin.fits", CRVAL1=5000.0, CDELT1=0.25, CRPIX1=3.0, OBJECT="HD 1")
    [spec] = read_fits(path)
    np.testing.assert_allclose(spec.wave, 5000.0 + 0.25 * (_pix() - 3.0), rtol=RTOL)
    assert spec.wave[2] == pytest.approx(5000.0, rel=RTOL)  # pixel 3 (1-based) is the reference
    np.testing.assert_array_equal(spec.flux, np.linspace(1.0, 2.0, NPIX))
    assert spec.ivar is None and spec.mask is None
    assert spec.medium is None  # nothing declared
    assert spec.name == "HD 1" and spec.source == str(path)
    assert count_spectra(path) == 1


def test_cd1_1_is_the_step_when_cdelt1_is_absent(tmp_path):
    path = _image(tmp_path / "cd.fits", CRVAL1=6000.0, CD1_1=0.5, CRPIX1=2.0)
    [spec] = read_fits(path)
    np.testing.assert_allclose(spec.wave, 6000.0 + 0.5 * (_pix() - 2.0), rtol=RTOL)


def test_log10_linear_dc_flag(tmp_path):
    path = _image(tmp_path / "log.fits", CRVAL1=3.7, CDELT1=1e-4, CRPIX1=1.0, **{"DC-FLAG": 1})
    assert fits.getheader(path)["DC-FLAG"] == 1
    [spec] = read_fits(path)
    np.testing.assert_allclose(spec.wave, 10.0 ** (3.7 + 1e-4 * (_pix() - 1.0)), rtol=RTOL)
    assert spec.wave[0] == pytest.approx(5011.872336272722, rel=RTOL)


def test_wave_log_ctype(tmp_path):
    # FITS paper III: lambda = CRVAL1 * exp(CDELT1 * (p - CRPIX1) / CRVAL1)
    path = _image(tmp_path / "wl.fits", CRVAL1=5000.0, CDELT1=0.1, CRPIX1=4.0, CTYPE1="WAVE-LOG")
    [spec] = read_fits(path)
    np.testing.assert_allclose(spec.wave, 5000.0 * np.exp(0.1 * (_pix() - 4.0) / 5000.0), rtol=RTOL)
    assert spec.medium == "vacuum"
    steps = np.diff(np.log(spec.wave))
    np.testing.assert_allclose(steps, steps[0], rtol=1e-6)  # constant in log: not linear


def test_cunit_nm_is_converted_to_angstrom(tmp_path):
    path = _image(tmp_path / "nm.fits", CRVAL1=500.0, CDELT1=0.02, CRPIX1=1.0, CUNIT1="nm")
    [spec] = read_fits(path)
    np.testing.assert_allclose(spec.wave, 10.0 * (500.0 + 0.02 * (_pix() - 1.0)), rtol=RTOL)


def test_unknown_cunit_is_a_clear_error(tmp_path):
    path = _image(tmp_path / "hz.fits", CRVAL1=5e14, CDELT1=1e10, CUNIT1="Hz")
    with pytest.raises(RemapDataError, match="wavelength unit 'Hz'") as err:
        read_fits(path)
    assert err.value.source == str(path)


@pytest.mark.parametrize(
    "keys, medium",
    [
        ({"CTYPE1": "AWAV"}, "air"),
        ({"CTYPE1": "WAVE"}, "vacuum"),
        ({"AIRORVAC": "air"}, "air"),
        ({"AIRORVAC": "vac"}, "vacuum"),
        ({"AIRORVAC": "air", "CTYPE1": "WAVE"}, "air"),  # the explicit keyword wins
        ({"VACUUM": True}, "vacuum"),
        ({"VACUUM": False}, "air"),
        ({}, None),
    ],
)
def test_medium_from_header(tmp_path, keys, medium):
    path = _image(tmp_path / "m.fits", CRVAL1=5000.0, CDELT1=1.0, **keys)
    [spec] = read_fits(path)
    assert spec.medium == medium


def test_ivar_extension(tmp_path):
    ivar = np.arange(NPIX, dtype=np.float64)
    path = _image(tmp_path / "iv.fits", extensions=[fits.ImageHDU(ivar, name="IVAR")], CRVAL1=5000.0, CDELT1=1.0)
    [spec] = read_fits(path)
    np.testing.assert_array_equal(spec.ivar, ivar)
    assert count_spectra(path) == 1  # the IVAR image is not a second spectrum


def test_error_extension_becomes_ivar_zero_where_error_not_positive(tmp_path):
    err = np.array([0.5, 2.0, 0.0, -1.0, np.nan, 0.1, 1.0, 4.0])
    mask = np.array([0, 0, 1, 0, 0, 0, 2, 0], dtype=np.int16)
    extensions = [fits.ImageHDU(err, name="ERROR"), fits.ImageHDU(mask, name="MASK")]
    path = _image(tmp_path / "err.fits", extensions=extensions, CRVAL1=5000.0, CDELT1=1.0)
    [spec] = read_fits(path)
    np.testing.assert_allclose(spec.ivar, [4.0, 0.25, 0.0, 0.0, 0.0, 100.0, 1.0, 0.0625], rtol=RTOL)
    np.testing.assert_array_equal(spec.mask, mask != 0)


def test_extension_of_wrong_shape_is_an_error(tmp_path):
    path = _image(tmp_path / "bad.fits", extensions=[fits.ImageHDU(np.ones(NPIX - 1), name="IVAR")],
                  CRVAL1=5000.0, CDELT1=1.0)
    with pytest.raises(RemapDataError, match=r"extension IVAR has shape \(7,\), flux has \(8,\)"):
        read_fits(path)


def test_2d_image_gives_one_spectrum_per_row(tmp_path):
    flux = np.arange(3 * NPIX, dtype=np.float64).reshape(3, NPIX)
    ivar = flux + 10.0
    path = _image(tmp_path / "rows.fits", flux, [fits.ImageHDU(ivar, name="IVAR")],
                  CRVAL1=5000.0, CDELT1=0.5, CRPIX1=1.0, CTYPE1="AWAV")
    spectra = read_fits(path)
    assert count_spectra(path) == 3
    assert len(spectra) == 3
    for i, spec in enumerate(spectra):
        np.testing.assert_allclose(spec.wave, 5000.0 + 0.5 * (_pix() - 1.0), rtol=RTOL)
        np.testing.assert_array_equal(spec.flux, flux[i])
        np.testing.assert_array_equal(spec.ivar, ivar[i])
        assert spec.medium == "air"
        assert spec.source == f"{path}[row {i}]"
    assert [len(read_spectra(path, 1, 3)), read_spectra(path, 1, 3)[0].source] == [2, f"{path}[row 1]"]


def test_image_without_crval1_is_a_clear_error(tmp_path):
    path = _image(tmp_path / "nowcs.fits", CDELT1=1.0)
    with pytest.raises(RemapDataError, match="no CRVAL1") as err:
        read_fits(path)
    assert str(path) in str(err.value)


def test_image_without_step_is_a_clear_error(tmp_path):
    path = _image(tmp_path / "nostep.fits", CRVAL1=5000.0)
    with pytest.raises(RemapDataError, match="neither CDELT1 nor CD1_1"):
        read_fits(path)


# -- FITS tables --------------------------------------------------------------------------------
def _sdss(path):
    loglam = (3.6 + 1e-4 * np.arange(NPIX)).astype(np.float32)
    and_mask = np.array([0, 0, 4, 0, 0, 1 << 20, 0, 0], dtype=np.int32)
    table = fits.BinTableHDU.from_columns([
        fits.Column("flux", "E", array=np.linspace(10, 17, NPIX)),
        fits.Column("loglam", "E", array=loglam),
        fits.Column("ivar", "E", array=np.full(NPIX, 2.0)),
        fits.Column("and_mask", "J", array=and_mask),
        fits.Column("or_mask", "J", array=and_mask | 8),
    ], name="COADD")
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    return loglam, and_mask


def test_sdss_style_table_is_one_vacuum_spectrum(tmp_path):
    path = tmp_path / "spec-0001.fits"
    loglam, and_mask = _sdss(path)
    [spec] = read_fits(path)
    np.testing.assert_allclose(spec.wave, 10.0 ** loglam.astype(np.float64), rtol=RTOL)
    assert spec.wave[0] == pytest.approx(10.0**3.6, rel=1e-6)
    np.testing.assert_allclose(spec.flux, np.linspace(10, 17, NPIX), rtol=1e-6)
    np.testing.assert_array_equal(spec.ivar, np.full(NPIX, 2.0))
    np.testing.assert_array_equal(spec.mask, and_mask != 0)
    assert spec.medium == "vacuum"
    assert spec.source == f"{path}[1]"
    assert count_spectra(path) == 1


def _array_table(path, wave_unit=None):
    n = 3
    wave = np.tile(np.linspace(500.0, 501.4, NPIX), (n, 1))
    flux = np.arange(n * NPIX, dtype=np.float64).reshape(n, NPIX)
    err = np.full((n, NPIX), 0.5)
    table = fits.BinTableHDU.from_columns([
        fits.Column("ID", "10A", array=np.array(["star-a", "star-b", "star-c"])),
        fits.Column("WAVE", f"{NPIX}D", array=wave, unit=wave_unit),
        fits.Column("FLUX", f"{NPIX}D", array=flux),
        fits.Column("ERR", f"{NPIX}D", array=err),
    ])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    return wave, flux


def test_table_with_array_columns_gives_one_spectrum_per_row(tmp_path):
    path = tmp_path / "many.fits"
    wave, flux = _array_table(path, wave_unit="nm")
    spectra = read_fits(path)
    assert count_spectra(path) == fits.getheader(path, 1)["NAXIS2"] == 3
    assert [s.name for s in spectra] == ["star-a", "star-b", "star-c"]
    assert [s.source for s in spectra] == [f"{path}[1][row {i}]" for i in range(3)]
    for i, spec in enumerate(spectra):
        np.testing.assert_allclose(spec.wave, 10.0 * wave[i], rtol=RTOL)  # TUNIT nm -> Å
        np.testing.assert_array_equal(spec.flux, flux[i])
        np.testing.assert_allclose(spec.ivar, np.full(NPIX, 4.0), rtol=RTOL)
        assert spec.medium is None
    assert [s.name for s in read_spectra(path, 2)] == ["star-c"]


def test_fits_without_flux_column_lists_the_columns_found(tmp_path):
    path = tmp_path / "cols.fits"
    table = fits.BinTableHDU.from_columns([fits.Column("lam", "D", array=np.arange(3.0)),
                                           fits.Column("counts", "D", array=np.ones(3))], name="DATA")
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    with pytest.raises(RemapDataError) as err:
        read_fits(path)
    assert err.value.source == str(path)
    assert "no flux column" in err.value.problem
    assert "HDU 1 (DATA): ['lam', 'counts']" in err.value.problem
    with pytest.raises(RemapDataError, match="no flux column"):
        count_spectra(path)


def test_fits_table_without_wavelength_column(tmp_path):
    path = tmp_path / "nowave.fits"
    table = fits.BinTableHDU.from_columns([fits.Column("flux", "D", array=np.ones(3)),
                                           fits.Column("pixel", "J", array=np.arange(3))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    with pytest.raises(RemapDataError) as err:
        read_fits(path)
    assert str(path) in err.value.source
    assert "no wavelength column" in err.value.problem
    assert "found columns ['flux', 'pixel']" in err.value.problem


@pytest.mark.parametrize("name", ["empty.fits", "empty.csv", "empty.ecsv", "empty.h5"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(RemapDataError, match=r"file is empty \(0 bytes\)") as err:
        read_spectra(path)
    assert err.value.source == str(path)
    with pytest.raises(RemapDataError, match="file is empty"):
        count_spectra(path)


def test_truncated_fits(tmp_path):
    good = _image(tmp_path / "good.fits", np.ones(3000), CRVAL1=5000.0, CDELT1=1.0)
    data = good.read_bytes()
    path = tmp_path / "cut.fits"
    path.write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns "File may have been truncated" before failing
        with pytest.raises(RemapDataError, match="truncated or corrupt") as err:
            read_fits(path)
        assert err.value.source == str(path)
        with pytest.raises(RemapDataError, match="truncated or corrupt"):
            count_spectra(path)


def test_garbage_fits(tmp_path):
    path = tmp_path / "junk.fits"
    path.write_bytes(b"this is not a FITS file\n" * 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RemapDataError, match="not a readable FITS file") as err:
            read_fits(path)
    assert err.value.source == str(path)


# -- ECSV / CSV ---------------------------------------------------------------------------------
def test_ecsv_wavelength_in_nm_is_converted(tmp_path):
    path = tmp_path / "spec.ecsv"
    wave_nm = np.linspace(500.0, 507.0, NPIX)
    table = Table({"wavelength": wave_nm * u.nm, "flux": np.linspace(1, 2, NPIX), "ivar": np.full(NPIX, 9.0)},
                  meta={"AIRORVAC": "air", "OBJECT": "Vega"})
    table.write(path)
    [spec] = read_table_file(path)
    np.testing.assert_allclose(spec.wave, 10.0 * wave_nm, rtol=RTOL)
    np.testing.assert_array_equal(spec.ivar, np.full(NPIX, 9.0))
    assert spec.medium == "air" and spec.name == "Vega"
    assert spec.source == str(path)
    assert count_spectra(path) == 1


def test_ecsv_with_array_columns_counts_every_row(tmp_path):
    path = tmp_path / "rows.ecsv"
    Table({"id": ["a", "b", "c"], "wave": np.tile(np.linspace(5000.0, 5007.0, NPIX), (3, 1)),
           "flux": np.ones((3, NPIX))}).write(path)
    spectra = read_spectra(path)
    assert [s.name for s in spectra] == ["a", "b", "c"]
    assert count_spectra(path) == 3  # streaming reads count_spectra rows: all of them


def test_csv_with_wave_flux_error(tmp_path):
    path = tmp_path / "spec.csv"
    path.write_text("wave,flux,error\n5000.0,1.0,0.5\n5000.5,0.9,0.25\n5001.0,0.8,0\n5001.5,1.1,2.0\n")
    [spec] = read_spectra(path)
    np.testing.assert_allclose(spec.wave, [5000.0, 5000.5, 5001.0, 5001.5], rtol=RTOL)
    np.testing.assert_allclose(spec.flux, [1.0, 0.9, 0.8, 1.1], rtol=RTOL)
    np.testing.assert_allclose(spec.ivar, [4.0, 16.0, 0.0, 0.25], rtol=RTOL)
    assert spec.mask is None and spec.medium is None
    assert file_kind(path) == "table"


def test_csv_without_flux_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("wave,counts\n5000.0,1.0\n5001.0,2.0\n")
    with pytest.raises(RemapDataError) as err:
        read_spectra(path)
    assert err.value.source == str(path)
    assert "no flux column" in err.value.problem and "['counts', 'wave']" in err.value.problem


def test_csv_with_header_only(tmp_path):
    path = tmp_path / "hdr.csv"
    path.write_text("wave,flux\n")
    with pytest.raises(RemapDataError, match="table has no rows"):
        read_spectra(path)


# -- HDF5 store ---------------------------------------------------------------------------------
def test_read_store_ranges_and_count(tmp_path):
    data = toy_set(n=6, n_val=2)
    path = write_dataset(tmp_path / "toy.h5", data)
    assert file_kind(path) == "hdf5"
    assert count_spectra(path) == 6
    got = read_store(path, 2, 5)
    assert isinstance(got, StoreSpectra)
    assert got.start == 2 and got.path == path
    assert list(got.ids) == ["s2", "s3", "s4"]
    np.testing.assert_array_equal(got.flux, data.flux[2:5])
    np.testing.assert_array_equal(got.mask, data.mask[2:5])
    assert got.instrument_dict["name"] == "tiny" and got.instrument_dict["medium"] == "air"
    tail = read_spectra(path, 4, 100)  # stop past the end is clipped
    assert list(tail.ids) == ["s4", "s5"] and tail.flux.shape == (2, data.flux.shape[1])
    np.testing.assert_allclose(tail.wave, data.wave, rtol=RTOL)


def test_truncated_store(tmp_path):
    good = write_dataset(tmp_path / "good.h5", toy_set(n=40))
    data = good.read_bytes()
    path = tmp_path / "cut.h5"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RemapDataError, match="truncated or corrupt") as err:
        read_store(path)
    assert err.value.source == str(path)
    with pytest.raises(RemapDataError):
        count_spectra(path)


# -- plain text and headerless CSV --------------------------------------------------------------
WAVE = np.linspace(5000.0, 5003.5, NPIX)
FLUX = np.linspace(1.0, 0.3, NPIX)
ERR = np.linspace(0.1, 0.8, NPIX)


def _columns(*cols, sep=" "):
    return "".join(sep.join(f"{v:.6g}" for v in row) + "\n" for row in zip(*cols, strict=True))


@pytest.mark.parametrize("suffix", [".txt", ".dat", ".asc"])
def test_two_column_text_without_header(tmp_path, suffix):
    path = tmp_path / f"star{suffix}"
    path.write_text("# MILES-like spectrum\n" + _columns(WAVE, FLUX, sep="   "))
    [spec] = read_spectra(path)
    np.testing.assert_allclose(spec.wave, WAVE, rtol=1e-6)
    np.testing.assert_allclose(spec.flux, FLUX, rtol=1e-6)
    assert spec.ivar is None and spec.medium is None and spec.source == str(path)
    assert spec.notes == ["columns read by position as wave, flux (wavelengths in Å)"]
    assert file_kind(path) == "text" and count_spectra(path) == 1


def test_three_column_text_is_wave_flux_error(tmp_path):
    path = tmp_path / "star.dat"
    path.write_text(_columns(WAVE, FLUX, ERR, sep="\t"))
    [spec] = read_spectra(path)
    np.testing.assert_allclose(spec.ivar, 1 / np.round(ERR, 6) ** 2, rtol=1e-5)


def test_text_header_names_the_columns_in_any_order(tmp_path):
    path = tmp_path / "star.txt"
    path.write_text("flux wavelength ivar\n" + _columns(FLUX, WAVE, np.full(NPIX, 4.0)))
    [spec] = read_spectra(path)
    np.testing.assert_allclose(spec.wave, WAVE, rtol=1e-6)
    np.testing.assert_allclose(spec.ivar, 4.0)
    assert spec.notes == []


def test_text_header_in_the_last_comment_line(tmp_path):
    path = tmp_path / "star.asc"
    path.write_text("# observed 2024\n# flux wave\n" + _columns(FLUX, WAVE))
    [spec] = read_spectra(path)
    np.testing.assert_allclose(spec.wave, WAVE, rtol=1e-6)
    assert spec.notes == []


def test_text_header_with_unknown_names_falls_back_to_position(tmp_path):
    path = tmp_path / "star.txt"
    path.write_text("lambda_A f_lambda\n" + _columns(WAVE, FLUX))
    [spec] = read_spectra(path)
    np.testing.assert_allclose(spec.flux, FLUX, rtol=1e-6)
    assert spec.notes == ["columns read by position as wave, flux (wavelengths in Å); header was: lambda_a f_lambda"]


@pytest.mark.parametrize("text, words", [
    ("5000 1 0.1 7\n5001 1 0.1 7\n", "no header and 4 columns: remap reads wavelength (Å), flux and optionally error"),
    ("5000 1\n5001 x\n", "line 2: 'x' is not a number; is this a text spectrum?"),
    ("5000 1\n5001 1 0.2\n", "line 2 has 3 columns, line 1 has 2"),
    ("Dear user,\nthis folder holds my spectra.\n", "line 2: 'this' is not a number"),
    ("# only a comment\n", "no rows of numbers in this text file"),
    ("wave flux err\n5000 1\n", "the header names 3 columns (wave flux err) but the rows have 2"),
])
def test_bad_text_files_say_what_is_wrong(tmp_path, text, words):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(RemapDataError) as err:
        read_spectra(path)
    assert err.value.source == str(path)
    assert words in err.value.problem, err.value.problem


def test_headerless_csv_is_wave_flux_error_by_position(tmp_path):
    path = tmp_path / "star.csv"
    path.write_text(_columns(WAVE, FLUX, ERR, sep=",").replace("0.8\n", "\n"))  # an empty last error field
    [spec] = read_spectra(path)
    np.testing.assert_allclose(spec.wave, WAVE, rtol=1e-6)
    assert spec.ivar[-1] == 0.0  # missing error: no weight
    assert spec.notes == ["columns read by position as wave, flux, error (wavelengths in Å)"]
    assert count_spectra(path) == 1


def test_headerless_csv_with_too_many_columns(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("5000,1,2,3,4\n5001,1,2,3,4\n")
    with pytest.raises(RemapDataError, match="no header and 5 columns"):
        read_spectra(path)


def test_unreadable_input_is_named(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    path = tmp_path / "locked.txt"
    path.write_text(_columns(WAVE, FLUX))

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(RemapDataError) as err:
        read_spectra(path)
    assert err.value.source == str(path) and err.value.problem == "cannot read: Permission denied (EACCES)"
