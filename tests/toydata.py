"""Tiny spectra shared by the training and transfer tests: line depths encode Teff and log g."""

import numpy as np

from remap_lib.data.dataset import SpectraSet
from remap_lib.spectra.instruments import Instrument

TINY_ARCH = dict(stem_channels=4, stage_channels=(4, 8), kernel_size=3, embedding_dim=4)
INSTRUMENT = Instrument("tiny", 5000.0, 5114.0, medium="air", fwhm=2.5, pixel=0.9)


def toy_set(n=48, seed=0, id_prefix="s", n_val=8, kind="synthetic"):
    """``n`` noise-free spectra with two lines whose depths follow Teff and log g; the last ``n_val`` are 'val'."""
    rng = np.random.default_rng(seed)
    wave = INSTRUMENT.wavelength_grid()
    labels = np.column_stack([rng.uniform(4000, 7000, n), rng.uniform(1, 5, n), rng.uniform(-2, 0.5, n)])
    depth = 0.2 + 0.5 * (labels[:, :1] - 4000) / 3000
    flux = 1 - depth * np.exp(-0.5 * ((wave - 5050) / 1.5) ** 2) - 0.1 * labels[:, 1:2] / 5 * np.exp(
        -0.5 * ((wave - 5080) / 1.5) ** 2)
    split = np.where(np.arange(n) < n - n_val, "train", "val")
    ids = np.array([f"{id_prefix}{i:04d}" if id_prefix == "m" else f"{id_prefix}{i}" for i in range(n)])
    return SpectraSet(wave, flux.astype(np.float32), np.full(flux.shape, np.inf), np.zeros(flux.shape, bool), labels,
                      ids, INSTRUMENT, kind=kind, meta={"split": split})
