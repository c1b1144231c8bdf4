"""LTE synthesis of one spectrum with PySME over a MARCS atmosphere and the Gaia-ESO lines.

:class:`SynthesisSettings` holds every knob that changes the output; it is recorded in the
provenance of each grid. The defaults trade PySME's own defaults (adaptive wavelength grid,
``accrt=1e-4``) for a fixed log-uniform transfer grid and a looser line-opacity threshold;
``bench/bench_synthesis.py`` measures what that costs in accuracy after degradation.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from remap_lib.data.sources.linelist import read_ges_linelist, to_pysme
from remap_lib.data.sources.marcs import MarcsModel


@dataclass(frozen=True)
class SynthesisSettings:
    """What PySME is asked to compute (all wavelengths in air Å)."""

    wave_min: float = 4945.0  # a few Å beyond the stored 4950–5750 Å so the LSF has data at the edges
    wave_max: float = 5755.0
    margin: float = 5.0  # lines just outside the window still add wings inside it
    transfer_resolution: float | None = 150_000.0  # λ/Δλ of the fixed transfer grid; None = PySME adaptive
    accrt: float = 1e-3  # PySME's line/continuum opacity threshold (its default is 1e-4)
    accwi: float = 3e-3
    line_select_method: str = "almax"

    def to_dict(self) -> dict:
        return asdict(self)

    def transfer_grid(self) -> np.ndarray | None:
        if not self.transfer_resolution:
            return None
        lo, hi = np.log(self.wave_min - 2.0), np.log(self.wave_max + 2.0)
        return np.exp(np.arange(lo, hi, 1.0 / self.transfer_resolution))


DEFAULT_SETTINGS = SynthesisSettings()
PYSME_DEFAULT = SynthesisSettings(transfer_resolution=None, accrt=1e-4, accwi=3e-3)


@lru_cache(maxsize=4)
def _linelist_for(wave_min: float, wave_max: float, margin: float):
    return to_pysme(read_ges_linelist(wave_range=(wave_min - margin, wave_max + margin)))


def synthesize(model: MarcsModel, settings: SynthesisSettings = DEFAULT_SETTINGS):
    """Continuum-normalized flux of ``model`` at PySME's output sampling.

    ``model`` is a :class:`MarcsModel`, or any object with the same labels and a
    ``pysme_atmosphere()`` method (an interpolated ATLAS9 star, for the test library).

    Returns ``(wave_air, flux, continuum)``; flux is divided by the continuum, so it is ~1
    between lines. Abundances are solar (Asplund et al. 2009) scaled by the model's [M/H].
    """
    from pysme.abund import Abund
    from pysme.atmosphere.marcsfile import MarcsAtmosphere
    from pysme.sme import SME_Structure
    from pysme.synthesize import synthesize_spectrum

    logging.getLogger("pysme").setLevel(logging.ERROR)
    if hasattr(model, "pysme_atmosphere"):  # another library (sources/kurucz.py) builds its own
        atmo = model.pysme_atmosphere()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = model.write(Path(tmp) / "model.mod")
            atmo = MarcsAtmosphere(str(path))
    atmo.method = "embedded"
    sme = SME_Structure()
    sme.atmo = atmo
    sme.teff, sme.logg = model.teff, model.logg
    sme.abund = Abund.solar()
    sme.monh = model.monh
    sme.vmic, sme.vmac, sme.vsini = model.vmicro, 0.0, 0.0
    sme.linelist = _linelist_for(settings.wave_min, settings.wave_max, settings.margin)
    sme.wran = [[settings.wave_min, settings.wave_max]]
    sme.accrt, sme.accwi = settings.accrt, settings.accwi
    sme.line_select_method = settings.line_select_method
    grid = settings.transfer_grid()
    if grid is not None:
        sme.wint = [grid]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sme = synthesize_spectrum(sme)
    wave = np.asarray(sme.wave[0], dtype=np.float64)
    flux = np.asarray(sme.synth[0], dtype=np.float64)
    cont = np.asarray(sme.cont[0], dtype=np.float64) if sme.cont is not None else np.ones_like(flux)
    inside = (wave >= settings.wave_min) & (wave <= settings.wave_max)
    return wave[inside], flux[inside], cont[inside]
