"""The paper's own synthetic library: PHOENIX nodes in the FGK box, as a :class:`SyntheticGrid`.

    remap prepare --library phoenix [--max-grid-spectra N]     # then `remap train` as for the SME grid

:func:`load_phoenix_grid` downloads the PHOENIX-ACES-AGSS-COND-2011 HiRes spectra (Husser et al.
2013) of the nodes inside :data:`~remap_lib.data.sources.marcs.FGK_BOX` (resumable, through
:func:`~remap_lib.data.sources.phoenix_fetch.fetch_phoenix_grid`), and puts each on the grid the SME library is
stored on (:data:`~remap_lib.data.sources.sme_grid.GRID_STORAGE`: R = 11000, air) with the one pipeline,
:func:`remap_lib.spectra.preprocess.to_instrument`: vacuum → air (Morton 2000), degraded from R = 500 000,
continuum-normalized. :func:`remap_lib.training.trainsets.synthetic_set` then treats it as the SME grid.

What differs from the SME grid: PHOENIX HiRes files carry no theoretical continuum, so the flux
is divided by the pseudo-continuum fit (:func:`~remap_lib.spectra.preprocess.continuum_normalize`, which
sits under the true continuum where lines crowd, i.e. in cool stars) where the SME grid divides by
PySME's continuum first; [M/H] is PHOENIX's (Asplund et al. 2009 scale) and [α/M] = 0 at every
metallicity, where MARCS's standard composition is α-enhanced below solar; the micro-turbulence
is PHOENIX's own (header ``PHXXI_L``).

Download: the box holds 33 Teff × 10 log g × 6 [M/H] = 1980 nodes ([M/H] = -2.5 is not a PHOENIX
value). Each file is fetched whole: :data:`~remap_lib.data.sources.phoenix.HIRES_FLUX_BYTES` = 6.28 MB of
data plus headers and an abundance table, i.e. ~12.4 GB for the box, and the shared wavelength file
once. Time per node is 6.3 MB over the bandwidth (5 s at 10 Mbit/s, 0.5 s at 100 Mbit/s): computed
from the file layout, not measured here (no internet). Only the window's pixels are read from the
cached files.
"""

from __future__ import annotations

import numpy as np

from remap_lib.data.sources.marcs import FGK_BOX
from remap_lib.data.sources.phoenix import (
    GRID_LOGG,
    GRID_MONH,
    GRID_TEFF,
    HIRES_RESOLUTION,
    PhoenixNode,
    parse_phoenix_filename,
    phoenix_base_url,
)
from remap_lib.data.sources.phoenix_fetch import fetch_phoenix_grid
from remap_lib.data.sources.phoenix_read import read_phoenix
from remap_lib.data.sources.sme_grid import GRID_STORAGE, SyntheticGrid
from remap_lib.fileio import RemapDataError
from remap_lib.spectra import preprocess

#: Nodes degraded together: one sparse operator serves them all, memory stays ~100 MB.
BATCH = 64


def fgk_nodes(box=FGK_BOX) -> list[PhoenixNode]:
    """The PHOENIX nodes ([α/M] = 0) inside ``box``, sorted by [M/H], log g, Teff as the SME grid."""
    def inside(values, key):
        lo, hi = box[key]
        return [v for v in values if lo - 1e-6 <= v <= hi + 1e-6]

    return [PhoenixNode(float(t), float(g), float(m), 0.0) for m in inside(GRID_MONH, "monh")
            for g in inside(GRID_LOGG, "logg") for t in inside(GRID_TEFF, "teff")]


def pick_nodes(nodes, max_nodes: int | None, seed: int = 0) -> list[PhoenixNode]:
    """``max_nodes`` of ``nodes`` drawn with ``seed`` (all when None), in their order: fetch only those."""
    nodes = list(nodes)
    if max_nodes is None or max_nodes >= len(nodes):
        return nodes
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be at least 1, got {max_nodes}")
    rows = np.sort(np.random.default_rng(seed).choice(len(nodes), max_nodes, replace=False))
    return [nodes[i] for i in rows]


def load_phoenix_grid(nodes=None, max_nodes: int | None = None, seed: int = 0, cache=None, base_url=None,
                      progress: bool = True) -> SyntheticGrid:
    """Download (once) and degrade PHOENIX nodes (default: the FGK box) into a :class:`SyntheticGrid`.

    ``max_nodes`` draws a seeded subset before anything is downloaded. A node that cannot be
    fetched or read fails the call with every failure named (rerun to resume the downloads).
    """
    todo = pick_nodes(fgk_nodes() if nodes is None else nodes, max_nodes, seed)
    summary = fetch_phoenix_grid(todo, cache=cache, base_url=base_url, progress=progress)
    if not summary.ok:
        raise RemapDataError(phoenix_base_url(base_url), f"{len(summary.failed)} of {len(todo)} PHOENIX nodes "
                             f"could not be fetched (rerun to resume):\n{summary}")
    storage = GRID_STORAGE
    window = preprocess.convert_medium(preprocess.pixel_edges(storage.wavelength_grid())[[0, -1]], storage.medium,
                                       "vacuum")
    reach = 5.0 * float(storage.lsf_fwhm(window[1])) + 2.0  # the kernel's reach and the medium shift (Å)
    fluxes, labels, vmicro, names = [], [], [], []
    by_node = {parse_phoenix_filename(p): p for p in summary.paths}
    paths = [by_node[n] for n in todo]
    for start in range(0, len(paths), BATCH):
        spectra = [read_phoenix(p, summary.wave, (window[0] - reach, window[1] + reach))
                   for p in paths[start:start + BATCH]]
        out = preprocess.to_instrument(spectra[0].wave, np.stack([s.flux for s in spectra]), storage,
                                       medium="vacuum", source_resolution=HIRES_RESOLUTION,
                                       source=f"PHOENIX {spectra[0].path.name}")
        fluxes.append(np.where(out.mask, np.nan, out.flux).astype(np.float32))
        labels += [(s.teff, s.logg, s.monh) for s in spectra]
        vmicro += [float(s.header.get("PHXXI_L", np.nan)) for s in spectra]
        names += [s.path.name.split(".PHOENIX")[0] for s in spectra]
    return SyntheticGrid(
        wave=storage.wavelength_grid(), flux=np.concatenate(fluxes), labels=np.asarray(labels, dtype=np.float64),
        alpha=np.zeros(len(names)), vmicro=np.asarray(vmicro), model=np.asarray(names), resolution=storage.resolution,
        provenance={"source": "PHOENIX-ACES-AGSS-COND-2011 HiRes (Husser et al. 2013)",
                    "base_url": phoenix_base_url(base_url), "nodes": len(names), "source_resolution": HIRES_RESOLUTION,
                    "medium": "vacuum, converted to air (Morton 2000)",
                    "normalization": "pseudo-continuum fit (preprocess.continuum_normalize); PHOENIX HiRes files "
                                     "have no theoretical continuum"},
    )
