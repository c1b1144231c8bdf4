"""Turn whatever a user hands :func:`remap_lib.predict` into :class:`~remap_lib.spectra.readers.RawSpectrum` objects.

Accepted, alone or in a list:

* ``(wave, flux)`` or ``(wave, flux, ivar)`` (a tuple or a list): numpy arrays or lists of numbers
  (wavelengths in Å), or astropy Quantities (any spectral unit: nm, µm, Hz...); ``flux`` may be 2-D,
  one spectrum per row on one axis;
* a ``dict`` with keys ``wave``, ``flux`` and optionally ``ivar``, ``mask``, ``medium``, ``name``;
* an astropy ``Table`` (columns as in :mod:`remap_lib.spectra.readers`);
* a ``specutils`` ``Spectrum``/``Spectrum1D`` (1-D or 2-D flux; uncertainty as ivar, std or var);
* a :class:`~remap_lib.data.dataset.SpectraSet` (our HDF5 store in memory) and
  :class:`~remap_lib.spectra.readers.StoreSpectra`;
* a path, directory or glob (str or ``Path``), read with :mod:`remap_lib.spectra.readers`.

File-level failures (an empty or truncated file) become a :class:`FailedInput` so that the
caller can report them in their row instead of stopping the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from remap_lib.data.dataset import SpectraSet
from remap_lib.fileio import RemapDataError
from remap_lib.spectra.inputfiles import expand_inputs
from remap_lib.spectra.readers import RawSpectrum, StoreSpectra, read_spectra, table_to_spectra


@dataclass
class FailedInput:
    """A source that could not be read at all; ``reason`` says why."""

    source: str
    reason: str


def _to_angstrom(wave):
    """Quantities (any spectral unit) to Å; plain arrays are taken as Å."""
    if hasattr(wave, "unit"):
        import astropy.units as u

        try:
            return np.asarray(wave.to_value(u.AA, equivalencies=u.spectral()), dtype=np.float64), str(wave.unit)
        except u.UnitConversionError as err:
            raise RemapDataError("<Quantity>", f"wavelength unit {wave.unit} is not a spectral unit") from err
    return np.asarray(wave, dtype=np.float64), None


def _value(x):
    return None if x is None else np.asarray(getattr(x, "value", x))


def _from_arrays(wave, flux, ivar=None, mask=None, medium=None, name="", source="<array>") -> list[RawSpectrum]:
    w, unit = _to_angstrom(wave)
    notes = [f"wavelengths converted from {unit} to Å"] if unit not in (None, "Angstrom", "AA") else []
    f = _value(flux)
    if (unit is not None and w.ndim == 1 and w.size > 1 and w[0] > w[-1] and np.shape(f)[-1:] == w.shape
            and wave.unit.physical_type != "length"):  # frequency/energy/wavenumber axes run the other way
        w, f = w[::-1], f[..., ::-1]
        ivar = None if ivar is None else _value(ivar)[..., ::-1]
        mask = None if mask is None else _value(mask)[..., ::-1]
        notes = [f"wavelengths converted from {unit} to Å and reversed to increasing order"]
    if w.ndim == 1 and f is not None and np.ndim(f) == 1 and f.size != w.size:
        # one spectrum with a mismatched length: keep it whole so the checks report the shapes
        return [RawSpectrum(w, np.asarray(f, dtype=np.float64), _value(ivar), _value(mask), medium, source, name,
                            notes)]
    if np.ndim(f) == 2:
        iv, m = _value(ivar), _value(mask)
        if iv is not None and np.shape(iv) != np.shape(f):
            raise RemapDataError(source, f"shape mismatch: ivar has shape {np.shape(iv)}, flux has {np.shape(f)}")
        if m is not None and np.shape(m) != np.shape(f):
            raise RemapDataError(source, f"shape mismatch: mask has shape {np.shape(m)}, flux has {np.shape(f)}")
        return [RawSpectrum(w, np.asarray(f[i], dtype=np.float64), None if iv is None else iv[i],
                            None if m is None else m[i], medium, f"{source}[{i}]", name, list(notes))
                for i in range(len(f))]
    return [RawSpectrum(w, np.asarray(f, dtype=np.float64), _value(ivar), _value(mask), medium, source, name, notes)]


def _from_specutils(spec) -> list[RawSpectrum]:
    import astropy.units as u

    wave = spec.spectral_axis.to_value(u.AA, equivalencies=u.spectral())
    flux = np.asarray(spec.flux.value, dtype=np.float64)
    ivar = None
    unc = getattr(spec, "uncertainty", None)
    if unc is not None:
        kind = getattr(unc, "uncertainty_type", "")
        arr = np.asarray(unc.array, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "ivar":
                ivar = arr
            elif kind == "std":
                ivar = np.where(arr > 0, 1.0 / arr**2, 0.0)
            elif kind == "var":
                ivar = np.where(arr > 0, 1.0 / arr, 0.0)
    mask = None if getattr(spec, "mask", None) is None else np.asarray(spec.mask, dtype=bool)
    if wave[0] > wave[-1]:  # frequency axes run the other way
        wave, flux = wave[::-1], flux[..., ::-1]
        ivar = None if ivar is None else ivar[..., ::-1]
        mask = None if mask is None else mask[..., ::-1]
    name = str(spec.meta.get("OBJECT", spec.meta.get("name", ""))) if getattr(spec, "meta", None) else ""
    return _from_arrays(wave, flux, ivar, mask, None, name, "<specutils>")


def _is_wave_flux(spectra) -> bool:
    """Whether ``spectra`` is ``(wave, flux[, ivar])``, rather than a collection of spectra.

    The wavelengths (first item) are a 1-D run of more than 3 numbers: an array, a Quantity or a
    list. A list of spectra starts with a spectrum, a file name or a container instead.
    """
    if not isinstance(spectra, tuple | list) or len(spectra) not in (2, 3):
        return False
    first = spectra[0]
    if hasattr(first, "spectral_axis") or hasattr(first, "colnames"):  # Spectrum/Table have .unit too
        return False
    if hasattr(first, "unit"):
        return True
    if isinstance(first, str | Path | dict | RawSpectrum | StoreSpectra | SpectraSet | FailedInput):
        return False
    try:
        wave = np.asarray(first)
    except ValueError:  # ragged: a list of spectra
        return False
    return wave.ndim == 1 and wave.size > 3 and wave.dtype.kind in "fiu"


def as_inputs(spectra) -> list[RawSpectrum | StoreSpectra | SpectraSet | FailedInput]:
    """Normalize ``spectra`` (see the module docstring) into a flat list of inputs."""
    if isinstance(spectra, RawSpectrum | StoreSpectra | SpectraSet | FailedInput):
        return [spectra]
    if isinstance(spectra, str | Path):
        out = []
        for path in expand_inputs(spectra):
            try:
                got = read_spectra(path)
            except RemapDataError as err:
                out.append(FailedInput(str(path), err.problem))
                continue
            out += got if isinstance(got, list) else [got]
        return out
    if isinstance(spectra, dict):
        keys = {k.lower(): v for k, v in spectra.items()}
        if "wave" not in keys or "flux" not in keys:
            raise ValueError(f"a spectrum dict needs 'wave' and 'flux' keys, got {sorted(spectra)}")
        return _from_arrays(keys["wave"], keys["flux"], keys.get("ivar"), keys.get("mask"), keys.get("medium"),
                            str(keys.get("name", "")), str(keys.get("source", "<dict>")))
    if hasattr(spectra, "spectral_axis") and hasattr(spectra, "flux"):
        return _from_specutils(spectra)
    if hasattr(spectra, "colnames"):  # astropy Table
        return table_to_spectra(spectra, "<Table>")
    if _is_wave_flux(spectra):
        return _from_arrays(*spectra)
    if isinstance(spectra, list | tuple):
        if spectra and all(isinstance(x, int | float | np.number) for x in spectra):
            raise TypeError(f"a {type(spectra).__name__} of {len(spectra)} numbers is not a spectrum; pass "
                            "(wave, flux[, ivar]) with one number per pixel in each")
        out = []
        for item in spectra:
            out += as_inputs(item)
        return out
    raise TypeError(f"cannot read spectra from a {type(spectra).__name__}; pass (wave, flux[, ivar]) arrays, "
                    "a dict, an astropy Table, a specutils Spectrum, a SpectraSet or a file path")
