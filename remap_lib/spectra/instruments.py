"""Instrument profiles: wavelength window, medium, line-spread function and pixel grid.

An :class:`Instrument` says what a spectrum looks like *after* it has been observed by (or
degraded to) that instrument. Every spectrum the model sees, synthetic or observed, is put on
``instrument.wavelength_grid()`` by :func:`remap_lib.spectra.preprocess.to_instrument`.

Two profiles are predefined:

* :data:`MARVELS` — the paper's: R = 11000 over 5000–5700 Å (vacuum), log-linear pixels of
  9 km/s, i.e. about 3 pixels per resolution element (c / R / 9 km/s = 3.03), 4366 pixels.
* :data:`MILES` — FWHM 2.5 Å, 0.9 Å pixels on MILES's own grid λ = 3540.5 + 0.9·i Å (air), so an
  observed MILES spectrum lands on it without any interpolation shift; 780 pixels.

Profiles can also be read from YAML (:meth:`Instrument.from_yaml`), e.g.::

    name: my-spectrograph
    wave_min: 5000.0
    wave_max: 5700.0
    medium: vacuum
    resolution: 22000        # or: fwhm: 1.2   (Å)
    velocity_pixel: 4.5      # or: pixel: 0.1  (Å)
    pixel_origin: null       # optional: a wavelength that lies on the grid
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import yaml

from remap_lib.constants import C_KMS, MILES_FWHM, MILES_WAVE_START, MILES_WAVE_STEP
from remap_lib.fileio import RemapDataError, atomic_write, require_nonempty

#: Largest |radial velocity| remap accepts (km/s). Stars in the Galaxy move at most ~1000 km/s relative
#: to the Sun; a larger value is more likely m/s, or a redshift, given as km/s.
MAX_RV_KMS = 3000.0
MEDIA = ("air", "vacuum")


@dataclass(frozen=True)
class Instrument:
    """A spectrograph profile.

    Parameters
    ----------
    name
        Short identifier (used in file names and the registry).
    wave_min, wave_max
        The wavelength window in Å, in the instrument's own ``medium``.
    medium
        ``"air"`` or ``"vacuum"``: the medium the wavelengths of this instrument are quoted in.
    resolution
        Constant resolving power R = λ / FWHM of the line-spread function (LSF). Give exactly one
        of ``resolution`` and ``fwhm``.
    fwhm
        Constant LSF FWHM in Å.
    pixel
        Linear pixel step in Å. Give exactly one of ``pixel`` and ``velocity_pixel``.
    velocity_pixel
        Log-linear pixel step in km/s (Δ ln λ = velocity_pixel / c).
    pixel_origin
        Optional wavelength (Å) that lies exactly on the pixel grid, so that the grid can be aligned
        with an existing one (MILES: 3540.5 Å). Default: ``wave_min``.

    The grid starts at the last grid point ≤ ``wave_min`` and ends at the first ≥ ``wave_max``, so it
    always covers the whole window.
    """

    name: str
    wave_min: float
    wave_max: float
    medium: str = "vacuum"
    resolution: float | None = None
    fwhm: float | None = None
    pixel: float | None = None
    velocity_pixel: float | None = None
    pixel_origin: float | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("Instrument name must be a non-empty string")
        for attr in ("wave_min", "wave_max"):
            value = getattr(self, attr)
            if not _is_positive_number(value):
                raise ValueError(f"Instrument {self.name!r}: {attr} must be a positive number, got {value!r}")
        if not self.wave_min < self.wave_max:
            raise ValueError(
                f"Instrument {self.name!r}: wave_min ({self.wave_min}) must be below wave_max ({self.wave_max})"
            )
        if self.medium not in MEDIA:
            raise ValueError(f"Instrument {self.name!r}: medium must be 'air' or 'vacuum', got {self.medium!r}")
        if (self.resolution is None) == (self.fwhm is None):
            raise ValueError(
                f"Instrument {self.name!r}: give exactly one line-spread function: resolution (R) or fwhm (Å)"
            )
        if (self.pixel is None) == (self.velocity_pixel is None):
            raise ValueError(
                f"Instrument {self.name!r}: give exactly one pixel grid: pixel (Å) or velocity_pixel (km/s)"
            )
        for attr in ("resolution", "fwhm", "pixel", "velocity_pixel", "pixel_origin"):
            value = getattr(self, attr)
            if value is not None and not _is_positive_number(value):
                raise ValueError(f"Instrument {self.name!r}: {attr} must be a positive number, got {value!r}")
        _, _, _, step = self._grid_indices()
        span = self.wave_max - self.wave_min if self.pixel is not None else math.log(self.wave_max / self.wave_min)
        if step >= span:
            raise ValueError(f"Instrument {self.name!r}: the pixel step is wider than the window")

    # -- grid ---------------------------------------------------------------------------------
    def _grid_indices(self) -> tuple[float, int, int, float]:
        """(origin, first index, last index, step) of the grid; step in Å or in ln λ."""
        origin = float(self.wave_min if self.pixel_origin is None else self.pixel_origin)
        if self.pixel is not None:
            step = float(self.pixel)
            lo, hi = (self.wave_min - origin) / step, (self.wave_max - origin) / step
        else:
            step = float(self.velocity_pixel) / C_KMS
            lo, hi = math.log(self.wave_min / origin) / step, math.log(self.wave_max / origin) / step
        # A tolerance so that a window edge falling exactly on a pixel isn't widened by round-off.
        first = math.floor(lo + 1e-9)
        last = math.ceil(hi - 1e-9)
        return origin, first, last, step

    @property
    def npix(self) -> int:
        """Number of pixels of :meth:`wavelength_grid`."""
        _, first, last, _ = self._grid_indices()
        return last - first + 1

    def wavelength_grid(self) -> np.ndarray:
        """Pixel-centre wavelengths in Å (float64, strictly increasing, covering the window)."""
        origin, first, last, step = self._grid_indices()
        index = np.arange(first, last + 1, dtype=np.float64)
        if self.pixel is not None:
            return origin + step * index
        return origin * np.exp(step * index)

    def lsf_fwhm(self, wave) -> np.ndarray:
        """FWHM of the line-spread function in Å at each wavelength ``wave`` (Å)."""
        wave = np.asarray(wave, dtype=np.float64)
        if self.resolution is not None:
            return wave / float(self.resolution)
        return np.full_like(wave, float(self.fwhm))

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain dict of the fields (None for the unused LSF/pixel options)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Instrument:
        """Inverse of :meth:`to_dict`; unknown keys are an error (catches typos such as ``resolutoin``)."""
        if not isinstance(data, dict):
            raise ValueError(f"an instrument must be a mapping of fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown instrument field(s) {unknown}; known: {sorted(known)}")
        missing = [k for k in ("name", "wave_min", "wave_max") if k not in data]
        if missing:
            raise ValueError(f"instrument is missing required field(s) {missing}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path) -> Instrument:
        """Read a profile from a YAML file; any problem raises RemapDataError naming the file."""
        path = require_nonempty(path)
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise RemapDataError(path, f"not valid YAML ({exc})") from exc
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise RemapDataError(path, f"not a valid instrument profile: {exc}") from exc

    def to_yaml(self, path) -> Path:
        """Write the profile as YAML (atomically) and return the path."""
        path = Path(path)
        with atomic_write(path, "w") as fh:
            yaml.safe_dump(self.to_dict(), fh, sort_keys=False)
        return path


def _is_positive_number(value) -> bool:
    # bool is an int subclass; "True" as a wavelength is a typo, not a number.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


#: The paper's instrument: MARVELS (Ge et al. 2008), R ≈ 11000, 5000–5700 Å (vacuum wavelengths),
#: 9 km/s log-linear pixels ≈ 3 pixels per resolution element → 4366 pixels.
MARVELS = Instrument("MARVELS", 5000.0, 5700.0, medium="vacuum", resolution=11000.0, velocity_pixel=9.0)

#: MILES (Sánchez-Blázquez et al. 2006; Falcón-Barroso et al. 2011): FWHM 2.5 Å, 0.9 Å pixels aligned
#: to the native MILES grid λ = 3540.5 + 0.9·i Å (air) → 4999.4 … 5700.5 Å, 780 pixels.
MILES = Instrument("MILES", 5000.0, 5700.0, medium="air", fwhm=MILES_FWHM, pixel=MILES_WAVE_STEP,
                   pixel_origin=MILES_WAVE_START)

INSTRUMENTS = {"marvels": MARVELS, "miles": MILES}


def get_instrument(name_or_path) -> Instrument:
    """An :class:`Instrument` from a registry name (``"marvels"``, ``"miles"``; any case), a YAML
    file path, or an Instrument (returned as is)."""
    if isinstance(name_or_path, Instrument):
        return name_or_path
    key = str(name_or_path)
    if key.strip().lower() in INSTRUMENTS:
        return INSTRUMENTS[key.strip().lower()]
    path = Path(key).expanduser()
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        return Instrument.from_yaml(path)
    raise ValueError(f"unknown instrument {key!r}: use one of {sorted(INSTRUMENTS)} or the path of a YAML profile")
