"""Reading PHOENIX files: the wavelength grid and flux, and every way a file can be bad."""

from __future__ import annotations

import os

import numpy as np
import pytest
from phoenixfake import NPIX, write_flux, write_wave

from remap_lib.data.sources import phoenix as ph
from remap_lib.data.sources import phoenix_read
from remap_lib.fileio import RemapDataError


def test_read_phoenix_full_and_cropped(tmp_path):
    wave_path = tmp_path / ph.WAVE_RELPATH
    wave = write_wave(wave_path)
    node = (5000, 3.0, -1.0, 0.2)
    flux_path = tmp_path / ph.phoenix_relpath(*node)
    flux = write_flux(flux_path, node)

    spec = phoenix_read.read_phoenix(flux_path, wave_path)
    assert spec.wave.dtype == np.float64 and spec.wave.shape == (NPIX,)
    np.testing.assert_array_equal(spec.wave, wave)
    np.testing.assert_allclose(spec.flux, flux, rtol=1e-7)
    assert spec.labels == node
    assert (spec.teff, spec.logg, spec.monh, spec.alpha) == (5000.0, 3.0, -1.0, 0.2)
    assert spec.flux_unit == "erg/s/cm^2/cm" and spec.wave_unit == "Angstrom" and spec.vacuum
    assert spec.header["PHXTEFF"] == 5000.0

    cropped = phoenix_read.read_phoenix(flux_path, wave_path, window=(5000.0, 5700.0))
    inside = (wave >= 5000.0) & (wave <= 5700.0)
    np.testing.assert_array_equal(cropped.wave, wave[inside])
    np.testing.assert_allclose(cropped.flux, flux[inside], rtol=1e-7)
    with pytest.raises(RemapDataError, match="outside the wavelength grid"):
        phoenix_read.read_phoenix(flux_path, wave_path, window=(20000.0, 21000.0))
    with pytest.raises(ValueError, match="wmin < wmax"):
        phoenix_read.read_phoenix(flux_path, wave_path, window=(6000.0, 5000.0))


def test_read_wave_is_cached_and_refreshed(tmp_path):
    path = tmp_path / "WAVE_PHOENIX-ACES-AGSS-COND-2011.fits"
    write_wave(path)
    first = phoenix_read.read_wave(path)
    assert phoenix_read.read_wave(path) is first
    assert first.dtype == np.float64 and not first.flags.writeable
    write_wave(path, npix=NPIX + 10)
    os.utime(path, ns=(1, 1))  # make sure the file version key changes
    assert phoenix_read.read_wave(path).size == NPIX + 10


@pytest.fixture
def reader_files(tmp_path):
    wave_path = tmp_path / "WAVE_PHOENIX-ACES-AGSS-COND-2011.fits"
    write_wave(wave_path)
    node = (5800, 4.5, 0.0, 0.0)
    flux_path = tmp_path / ph.phoenix_filename(*node)
    return wave_path, node, flux_path


def test_reader_empty_file(reader_files):
    wave_path, node, flux_path = reader_files
    flux_path.write_bytes(b"")
    with pytest.raises(RemapDataError, match="empty") as err:
        phoenix_read.read_phoenix(flux_path, wave_path)
    assert str(flux_path) in str(err.value)


def test_reader_truncated_data(reader_files):
    wave_path, node, flux_path = reader_files
    write_flux(flux_path, node)
    data = flux_path.read_bytes()
    flux_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RemapDataError, match="truncated") as err:
        phoenix_read.read_phoenix(flux_path, wave_path)
    assert err.value.source == str(flux_path)
    with pytest.raises(RemapDataError, match="truncated"):  # also when only a window is read
        phoenix_read.read_phoenix(flux_path, wave_path, window=(3000, 3100))


def test_reader_truncated_header_and_not_fits(reader_files):
    wave_path, node, flux_path = reader_files
    write_flux(flux_path, node)
    flux_path.write_bytes(flux_path.read_bytes()[:1000])
    with pytest.raises(RemapDataError, match="not a readable FITS") as err:
        phoenix_read.read_phoenix(flux_path, wave_path)
    assert str(flux_path) in str(err.value)
    flux_path.write_text("<html>404 Not Found</html>\n" * 50)
    with pytest.raises(RemapDataError, match="not a readable FITS"):
        phoenix_read.read_phoenix(flux_path, wave_path)


def test_reader_missing_header_keys(reader_files):
    wave_path, node, flux_path = reader_files
    write_flux(flux_path, node, drop=("PHXLOGG", "PHXALPHA"))
    with pytest.raises(RemapDataError, match="missing PHOENIX header keys: PHXLOGG, PHXALPHA"):
        phoenix_read.read_phoenix(flux_path, wave_path)


def test_reader_all_nan(reader_files):
    wave_path, node, flux_path = reader_files
    write_flux(flux_path, node, flux=np.full(NPIX, np.nan, dtype=np.float32))
    with pytest.raises(RemapDataError, match="no finite values"):
        phoenix_read.read_phoenix(flux_path, wave_path)


def test_reader_header_filename_mismatch(reader_files):
    wave_path, node, flux_path = reader_files
    write_flux(flux_path, node, PHXTEFF=5900.0)
    with pytest.raises(RemapDataError, match="do not match the file name") as err:
        phoenix_read.read_phoenix(flux_path, wave_path)
    assert err.value.source == str(flux_path)
    # a renamed (non-PHOENIX) file is read with the header's labels
    other = flux_path.with_name("mystar.fits")
    flux_path.rename(other)
    assert phoenix_read.read_phoenix(other, wave_path).teff == 5900.0


def test_reader_length_mismatch(reader_files):
    wave_path, node, flux_path = reader_files
    write_flux(flux_path, node, npix=NPIX - 1)
    with pytest.raises(RemapDataError, match="4999 pixels but the wavelength grid has 5000"):
        phoenix_read.read_phoenix(flux_path, wave_path)
