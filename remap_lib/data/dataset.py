"""One HDF5 layout for every training set, synthetic or observed.

Layout (all rows aligned)::

    /wave    (npix,)      float64  Å, in the instrument's medium
    /flux    (n, npix)    float32  continuum-normalized
    /ivar    (n, npix)    float32  inverse variance of flux; inf = noise-free synthetic, 0 = masked
    /mask    (n, npix)    bool     True where a pixel is bad
    /labels  (n, 3)       float64  Teff [K], log g [dex], [Fe/H] [dex] (NaN = unknown)
    /ids     (n,)         str
    /meta/<column> (n,)   any extra per-row column (split, spectral type, ...)
    attrs: format_version, kind, instrument (JSON), provenance (JSON)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from remap_lib.constants import LABEL_NAMES, LABEL_UNITS  # noqa: F401 (re-exported)
from remap_lib.fileio import RemapDataError, atomic_path, require_nonempty
from remap_lib.spectra.instruments import Instrument

FORMAT_VERSION = 1


@dataclass
class SpectraSet:
    """Spectra on one instrument grid, with labels and per-row metadata."""

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    instrument: Instrument
    kind: str = "synthetic"  # or "observed"
    provenance: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n, npix = np.shape(self.flux)
        checks = {"wave": (np.shape(self.wave), (npix,)), "ivar": (np.shape(self.ivar), (n, npix)),
                  "mask": (np.shape(self.mask), (n, npix)), "labels": (np.shape(self.labels), (n, 3)),
                  "ids": (np.shape(self.ids), (n,))}
        checks.update({f"meta/{k}": (np.shape(v)[:1], (n,)) for k, v in self.meta.items()})
        for name, (got, want) in checks.items():
            if got != want:
                raise ValueError(f"{name} has shape {got}, expected {want}")

    def __len__(self) -> int:
        return len(self.flux)

    def select(self, rows) -> SpectraSet:
        """A new set holding ``rows`` (a boolean mask or indices)."""
        rows = np.asarray(rows)
        return SpectraSet(self.wave, self.flux[rows], self.ivar[rows], self.mask[rows], self.labels[rows],
                          self.ids[rows], self.instrument, self.kind, dict(self.provenance),
                          {k: np.asarray(v)[rows] for k, v in self.meta.items()})


def write_dataset(path, data: SpectraSet) -> Path:
    """Write ``data`` to ``path`` atomically (a crash leaves the old file or none)."""
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["format_version"] = FORMAT_VERSION
        h5.attrs["kind"] = data.kind
        h5.attrs["instrument"] = json.dumps(data.instrument.to_dict())
        h5.attrs["provenance"] = json.dumps(data.provenance, default=str)
        h5.create_dataset("wave", data=np.asarray(data.wave, np.float64))
        chunks = (min(len(data), 64), data.flux.shape[1]) if len(data) else None
        for name, values, dtype in (("flux", data.flux, np.float32), ("ivar", data.ivar, np.float32),
                                    ("mask", data.mask, bool)):
            h5.create_dataset(name, data=np.asarray(values, dtype), chunks=chunks,
                              compression="gzip", compression_opts=4, shuffle=True)
        h5.create_dataset("labels", data=np.asarray(data.labels, np.float64))
        h5["labels"].attrs["names"] = list(LABEL_NAMES)
        h5["labels"].attrs["units"] = list(LABEL_UNITS)
        h5.create_dataset("ids", data=np.asarray(data.ids).astype(str).astype(object), dtype=h5py.string_dtype())
        group = h5.create_group("meta")
        for key, values in data.meta.items():
            values = np.asarray(values)
            if values.dtype.kind in "UO":
                group.create_dataset(key, data=values.astype(str).astype(object), dtype=h5py.string_dtype())
            else:
                group.create_dataset(key, data=values)
    return path


REQUIRED = ("wave", "flux", "ivar", "mask", "labels", "ids")


def _open(path) -> h5py.File:
    path = require_nonempty(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise RemapDataError(path, f"not a readable HDF5 file, truncated or corrupt? ({err})") from err
    missing = [k for k in REQUIRED if k not in h5]
    if missing:
        h5.close()
        raise RemapDataError(path, f"not a remap dataset: missing {missing}")
    version = int(h5.attrs.get("format_version", 0))
    if version > FORMAT_VERSION:
        h5.close()
        raise RemapDataError(path, f"written by a newer remap (format {version}); upgrade remap to read it")
    return h5


def read_dataset(path, rows=None) -> SpectraSet:
    """Read a whole dataset (or ``rows``, sorted indices) into memory."""
    with _open(path) as h5:
        sel = slice(None) if rows is None else np.asarray(rows)
        try:
            return SpectraSet(
                wave=h5["wave"][:], flux=h5["flux"][sel], ivar=h5["ivar"][sel], mask=h5["mask"][sel],
                labels=h5["labels"][sel], ids=h5["ids"].asstr()[sel],
                instrument=Instrument.from_dict(json.loads(h5.attrs["instrument"])),
                kind=str(h5.attrs.get("kind", "synthetic")),
                provenance=json.loads(h5.attrs.get("provenance", "{}")),
                meta={k: (v.asstr()[sel] if h5py.check_string_dtype(v.dtype) else v[sel])
                      for k, v in h5["meta"].items()},
            )
        except (OSError, KeyError, ValueError) as err:
            raise RemapDataError(path, f"damaged dataset ({err})") from err
