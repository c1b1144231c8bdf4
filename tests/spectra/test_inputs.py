"""remap_lib.spectra.inputs: whatever a user hands predict() becomes RawSpectrum (or store) inputs."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty
from astropy.table import Table
from specutils import Spectrum
from toydata import toy_set

from remap_lib.fileio import RemapDataError
from remap_lib.spectra.inputs import FailedInput, as_inputs
from remap_lib.spectra.readers import RawSpectrum

NPIX = 6
RTOL = 1e-9
WAVE = np.linspace(5000.0, 5005.0, NPIX)
FLUX = np.linspace(1.0, 0.5, NPIX)


def test_wave_flux_arrays():
    [spec] = as_inputs((WAVE, FLUX))
    assert isinstance(spec, RawSpectrum)
    np.testing.assert_array_equal(spec.wave, WAVE)
    np.testing.assert_array_equal(spec.flux, FLUX)
    assert spec.ivar is None and spec.mask is None and spec.medium is None
    assert spec.source == "<array>" and spec.notes == []


def test_2d_flux_with_ivar_gives_one_spectrum_per_row():
    flux = np.arange(3 * NPIX, dtype=np.float64).reshape(3, NPIX)
    ivar = flux + 1.0
    spectra = as_inputs((WAVE, flux, ivar))
    assert len(spectra) == 3
    for i, spec in enumerate(spectra):
        np.testing.assert_array_equal(spec.wave, WAVE)
        np.testing.assert_array_equal(spec.flux, flux[i])
        np.testing.assert_array_equal(spec.ivar, ivar[i])
        assert spec.source == f"<array>[{i}]"


def test_2d_flux_with_ivar_of_another_shape():
    with pytest.raises(RemapDataError, match=r"ivar has shape \(2, 6\), flux has \(3, 6\)"):
        as_inputs((WAVE, np.ones((3, NPIX)), np.ones((2, NPIX))))


def test_mismatched_lengths_are_kept_for_the_checks():
    [spec] = as_inputs((WAVE, FLUX[:-1]))
    assert spec.wave.shape == (NPIX,) and spec.flux.shape == (NPIX - 1,)


@pytest.mark.parametrize("unit, factor, name", [(u.nm, 10.0, "nm"), (u.um, 1e4, "um")])
def test_quantity_wavelengths_are_converted_with_a_note(unit, factor, name):
    wave = (WAVE / factor) * unit
    [spec] = as_inputs((wave, FLUX))
    np.testing.assert_allclose(spec.wave, WAVE, rtol=RTOL)
    assert spec.notes == [f"wavelengths converted from {name} to Å"]


def test_quantity_in_angstrom_needs_no_note():
    [spec] = as_inputs((WAVE * u.AA, FLUX * u.Jy))
    np.testing.assert_array_equal(spec.wave, WAVE)
    np.testing.assert_array_equal(spec.flux, FLUX)
    assert spec.notes == []


def test_frequency_axis_is_reversed_to_increasing_wavelength():
    freq = np.sort((WAVE * u.AA).to(u.Hz, equivalencies=u.spectral()))  # ascending Hz = descending Å
    ivar = np.arange(1.0, NPIX + 1)
    mask = np.array([1, 0, 0, 0, 0, 0], bool)
    [spec] = as_inputs((freq, FLUX[::-1], ivar))
    np.testing.assert_allclose(spec.wave, WAVE, rtol=RTOL)
    assert np.all(np.diff(spec.wave) > 0)
    np.testing.assert_array_equal(spec.flux, FLUX)  # pixels follow their wavelengths
    np.testing.assert_array_equal(spec.ivar, ivar[::-1])
    assert spec.notes == ["wavelengths converted from Hz to Å and reversed to increasing order"]
    [masked] = as_inputs({"wave": freq, "flux": FLUX[::-1], "mask": mask})
    np.testing.assert_array_equal(masked.mask, mask[::-1])


def test_frequency_axis_with_2d_flux():
    freq = np.sort((WAVE * u.AA).to(u.THz, equivalencies=u.spectral()))
    flux = np.arange(2 * NPIX, dtype=np.float64).reshape(2, NPIX)
    spectra = as_inputs((freq, flux))
    assert len(spectra) == 2
    for i, spec in enumerate(spectra):
        np.testing.assert_allclose(spec.wave, WAVE, rtol=RTOL)
        np.testing.assert_array_equal(spec.flux, flux[i, ::-1])


def test_quantity_that_is_not_spectral():
    with pytest.raises(RemapDataError, match="wavelength unit kg is not a spectral unit"):
        as_inputs((WAVE * u.kg, FLUX))


def test_dict_input():
    mask = np.zeros(NPIX, bool)
    mask[2] = True
    [spec] = as_inputs({"Wave": WAVE, "flux": FLUX, "ivar": np.full(NPIX, 4.0), "mask": mask, "medium": "air",
                        "name": "HD 2"})
    np.testing.assert_array_equal(spec.wave, WAVE)
    np.testing.assert_array_equal(spec.ivar, np.full(NPIX, 4.0))
    np.testing.assert_array_equal(spec.mask, mask)
    assert (spec.medium, spec.name, spec.source) == ("air", "HD 2", "<dict>")


def test_dict_without_flux():
    with pytest.raises(ValueError, match=r"needs 'wave' and 'flux' keys, got \['ivar', 'wave'\]"):
        as_inputs({"wave": WAVE, "ivar": FLUX})


def test_table_one_spectrum():
    table = Table({"lambda": WAVE / 10 * u.nm, "flux": FLUX, "err": np.full(NPIX, 0.5)})
    [spec] = as_inputs(table)
    np.testing.assert_allclose(spec.wave, WAVE, rtol=RTOL)
    np.testing.assert_array_equal(spec.flux, FLUX)
    np.testing.assert_allclose(spec.ivar, np.full(NPIX, 4.0), rtol=RTOL)
    assert spec.source == "<Table>"


def test_table_with_array_columns():
    flux = np.arange(2 * NPIX, dtype=np.float64).reshape(2, NPIX)
    table = Table({"name": ["a", "b"], "wave": np.tile(WAVE, (2, 1)), "flux": flux}, meta={"AIRORVAC": "vac"})
    spectra = as_inputs(table)
    assert [s.name for s in spectra] == ["a", "b"]
    assert [s.source for s in spectra] == ["<Table>[row 0]", "<Table>[row 1]"]
    assert [s.medium for s in spectra] == ["vacuum", "vacuum"]
    for i, spec in enumerate(spectra):
        np.testing.assert_array_equal(spec.wave, WAVE)
        np.testing.assert_array_equal(spec.flux, flux[i])


def test_specutils_std_uncertainty():
    spec_in = Spectrum(flux=FLUX * u.Jy, spectral_axis=WAVE / 10 * u.nm,
                       uncertainty=StdDevUncertainty(np.array([0.5, 0.25, 0.0, 1.0, 2.0, 0.1])))
    [spec] = as_inputs(spec_in)
    np.testing.assert_allclose(spec.wave, WAVE, rtol=RTOL)
    np.testing.assert_array_equal(spec.flux, FLUX)
    np.testing.assert_allclose(spec.ivar, [4.0, 16.0, 0.0, 1.0, 0.25, 100.0], rtol=RTOL)
    assert spec.source == "<specutils>"


@pytest.mark.parametrize("uncertainty, ivar", [
    (InverseVariance(np.full(NPIX, 3.0)), np.full(NPIX, 3.0)),
    (VarianceUncertainty(np.full(NPIX, 4.0)), np.full(NPIX, 0.25)),
])
def test_specutils_ivar_and_variance(uncertainty, ivar):
    [spec] = as_inputs(Spectrum(flux=FLUX * u.Jy, spectral_axis=WAVE * u.AA, uncertainty=uncertainty))
    np.testing.assert_allclose(spec.ivar, ivar, rtol=RTOL)


def test_specutils_frequency_axis_and_2d_flux():
    freq = np.sort((WAVE * u.AA).to(u.Hz, equivalencies=u.spectral()))
    flux = np.arange(2 * NPIX, dtype=np.float64).reshape(2, NPIX)
    spectra = as_inputs(Spectrum(flux=flux * u.Jy, spectral_axis=freq, uncertainty=InverseVariance(flux + 1)))
    assert len(spectra) == 2
    for i, spec in enumerate(spectra):
        np.testing.assert_allclose(spec.wave, WAVE, rtol=RTOL)
        np.testing.assert_array_equal(spec.flux, flux[i, ::-1])
        np.testing.assert_array_equal(spec.ivar, flux[i, ::-1] + 1)


def test_tuple_of_containers_is_not_taken_for_arrays():
    spec = Spectrum(flux=FLUX * u.Jy, spectral_axis=WAVE * u.AA)
    table = Table({"wave": WAVE, "flux": FLUX})
    assert len(as_inputs((spec, spec))) == 2
    assert [s.source for s in as_inputs((table, table))] == ["<Table>", "<Table>"]


def test_passthrough_and_nested_lists():
    raw = RawSpectrum(WAVE, FLUX)
    data = toy_set(n=3, n_val=1)
    got = as_inputs([raw, [data, (WAVE, FLUX)]])
    assert got[0] is raw and got[1] is data
    assert isinstance(got[2], RawSpectrum) and len(got) == 3


def test_missing_file_in_a_list(tmp_path):
    good = tmp_path / "a.csv"
    good.write_text("wave,flux\n5000,1\n5001,1\n")
    with pytest.raises(FileNotFoundError, match="missing.fits: no such file or directory"):
        as_inputs([str(good), str(tmp_path / "missing.fits")])


def test_unreadable_file_becomes_a_failed_input(tmp_path):
    good = tmp_path / "a.csv"
    good.write_text("wave,flux\n5000,1\n5001,1\n")
    empty = tmp_path / "b.fits"
    empty.write_bytes(b"")
    junk = tmp_path / "c.doc"
    junk.write_text("hello")
    with pytest.warns(UserWarning, match="skipped 1 file of unknown type"):
        got = as_inputs([tmp_path, junk])  # the directory skips c.doc, and says so; named explicitly it fails
    assert isinstance(got[0], RawSpectrum) and got[0].source == str(good)
    assert got[1] == FailedInput(str(empty), "file is empty (0 bytes)")
    assert isinstance(got[2], FailedInput) and got[2].source == str(junk)
    assert got[2].reason.startswith("unsupported file type")


@pytest.mark.parametrize("container", [tuple, list])
def test_wave_flux_as_lists(container):
    [spec] = as_inputs(container([list(WAVE), list(FLUX)]))
    np.testing.assert_array_equal(spec.wave, WAVE)
    np.testing.assert_array_equal(spec.flux, FLUX)
    [spec] = as_inputs((list(WAVE), FLUX.tolist(), [4.0] * NPIX))
    np.testing.assert_array_equal(spec.ivar, np.full(NPIX, 4.0))
    two = as_inputs((WAVE.tolist(), [FLUX.tolist(), FLUX.tolist()]))  # 2-D flux as nested lists
    assert len(two) == 2 and two[1].source == "<array>[1]"


def test_list_of_spectra_is_not_taken_for_wave_flux():
    got = as_inputs([(WAVE, FLUX), (WAVE, FLUX)])
    assert len(got) == 2 and all(isinstance(s, RawSpectrum) for s in got)
    got = as_inputs([(list(WAVE), list(FLUX)), (WAVE, FLUX), (WAVE, FLUX)])
    assert len(got) == 3


def test_unsupported_type():
    with pytest.raises(TypeError, match="a list of 6 numbers is not a spectrum"):
        as_inputs(list(FLUX))
    with pytest.raises(TypeError, match="cannot read spectra from a int; pass \\(wave, flux\\[, ivar\\]\\) arrays"):
        as_inputs(42)
    with pytest.raises(TypeError, match="from a set"):
        as_inputs({1, 2})
