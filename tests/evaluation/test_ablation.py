"""Ablations: each variant changes one training setting; one tiny variant runs end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from remap_lib.data.dataset import LABEL_NAMES, SpectraSet
from remap_lib.evaluation.ablation import VARIANTS, run_variant
from remap_lib.nn.binning import DEFAULT_BINS
from remap_lib.spectra.instruments import Instrument
from remap_lib.training.augment import AugmentConfig
from remap_lib.training.train import TrainConfig
from remap_lib.training.transfer import finetune_config

TINY_ARCH = dict(stem_channels=4, stage_channels=(4, 8), kernel_size=3, embedding_dim=4)
INSTRUMENT = Instrument("tiny", 5000.0, 5114.0, medium="air", fwhm=2.5, pixel=0.9)


def toy_set(n, seed):
    rng = np.random.default_rng(seed)
    wave = INSTRUMENT.wavelength_grid()
    labels = np.column_stack([rng.uniform(4500, 6500, n), rng.uniform(3.5, 5, n), rng.uniform(-1, 0.3, n)])
    depth = 0.2 + 0.5 * (labels[:, :1] - 4000) / 3000
    flux = 1 - depth * np.exp(-0.5 * ((wave - 5050) / 1.5) ** 2)
    return SpectraSet(wave, flux.astype(np.float32), np.full(flux.shape, np.inf), np.zeros(flux.shape, bool), labels,
                      np.array([f"s{seed}_{i}" for i in range(n)]), INSTRUMENT)


def test_each_variant_changes_one_setting():
    assert VARIANTS["full method"] == {}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    defaults = TrainConfig()
    for name, change in VARIANTS.items():
        if name == "full method":
            continue
        assert len(change) == 1, name
        (key, value), = change.items()
        assert key in fields, name
        assert getattr(defaults, key) != value, f"{name}: {key}={value} is already the default"
        assert getattr(finetune_config(), key) != value, f"{name}: no change when fine-tuning"
    assert len({tuple(c) for c in VARIANTS.values()}) == len(VARIANTS)  # no two switch off the same thing


def test_run_variant_returns_the_table_row(tmp_path):
    torch.manual_seed(0)
    synthetic, stars = toy_set(24, 0), toy_set(24, 1)
    pre = TrainConfig(epochs=1, batch_size=8, threads=1, augment=AugmentConfig.none())
    ft = finetune_config(epochs=1, batch_size=8, freeze_epochs=0, threads=1, augment=AugmentConfig.none())
    row = run_variant("no SWA", synthetic, stars.select(np.arange(16)), stars.select(np.arange(16, 20)),
                      stars.select(np.arange(20, 24)), pre, ft, TINY_ARCH, DEFAULT_BINS, tmp_path, progress=False)
    assert set(row) == {"method", *(f"{k}_{n}" for k in ("sigma", "bias", "ece", "cov68") for n in LABEL_NAMES)}
    assert row["method"] == "no SWA"
    for key, value in row.items():
        if key != "method":
            assert np.isfinite(value), key
    assert all(0.0 <= row[f"cov68_{n}"] <= 1.0 for n in LABEL_NAMES)
    assert (tmp_path / "no_SWA" / "pretrained.pt").exists()
    assert (tmp_path / "no_SWA" / "finetune" / "checkpoint.pt").exists()
