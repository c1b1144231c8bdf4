"""Noisier copies of a prepared set, the same noise for every method that reads them (paired evaluation).

:func:`with_snr` brings every spectrum of a :class:`~remap_lib.data.dataset.SpectraSet` (continuum-
normalized flux on the model's pixels) down to a target S/N per pixel by adding Gaussian noise in
quadrature to the noise it already has (DER_SNR, as the training sets estimate it). The draw of a
star depends only on its id, the S/N and a salt, so two rows, seeds or folds that degrade the same
star see the same noise, and their difference measures the methods, not the draws.

Why not the raw-spectrum path of :mod:`remap_lib.evaluation.robustness`: the study holds prepared
sets, and a study row must score thousands of degraded spectra without re-reading any file.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np

from remap_lib.data.dataset import SpectraSet
from remap_lib.training.trainsets import der_snr_noise


def star_rng(star_id: str, snr: float, salt: int = 0) -> np.random.Generator:
    """The generator of one star's noise at ``snr`` (stable across processes: crc32, not ``hash``)."""
    return np.random.default_rng([zlib.crc32(str(star_id).encode()), int(round(1000 * snr)), int(salt)])


def with_snr(data: SpectraSet, snr: float, salt: int = 0) -> SpectraSet:
    """``data`` with each spectrum's noise raised to σ = 1/``snr`` of the normalized flux.

    The flux of a spectrum already noisier than that is left as it is. ``ivar`` becomes 1/σ², σ the
    larger of the target and the DER_SNR noise, on the unmasked pixels that had a finite positive one.
    """
    if not (np.isfinite(snr) and snr > 0):
        raise ValueError(f"the target S/N must be positive and finite, got {snr!r}")
    target = 1.0 / snr
    present = np.nan_to_num(der_snr_noise(np.where(data.mask, 1.0, data.flux)), nan=0.0)
    added = np.sqrt(np.clip(target ** 2 - present ** 2, 0.0, None))
    npix = data.flux.shape[1]
    noise = np.stack([star_rng(i, snr, salt).standard_normal(npix) for i in data.ids]) if len(data) else \
        np.zeros((0, npix))
    flux = (data.flux + added[:, None] * noise).astype(data.flux.dtype)
    sigma = np.maximum(present, target)
    had = np.isfinite(data.ivar) & (data.ivar > 0) & ~data.mask
    ivar = np.where(had, 1.0 / sigma[:, None] ** 2, data.ivar).astype(data.ivar.dtype)
    provenance = {**data.provenance, "degraded": {"snr": float(snr), "salt": int(salt)}}
    return replace(data, flux=flux, ivar=ivar, provenance=provenance)
