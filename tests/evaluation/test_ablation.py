"""Ablations: each variant changes one training setting; one tiny variant runs end to end."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from toymodel import ConstantLogits

from remap_lib.data.dataset import LABEL_NAMES, SpectraSet
from remap_lib.evaluation.ablation import INFERENCE_ABLATIONS, VARIANTS, inference_ablations, run_variant
from remap_lib.evaluation.evaluate import score_row
from remap_lib.nn.binning import DEFAULT_BINS, LabelBins
from remap_lib.spectra.instruments import Instrument
from remap_lib.training.augment import AugmentConfig
from remap_lib.training.config import TrainConfig
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


def _constant(z):
    return ConstantLogits({n: z for n in LABEL_NAMES})


def test_inference_ablations_by_hand():
    bins = {n: LabelBins(n, (0.0, 1.0, 2.0, 3.0)) for n in LABEL_NAMES}  # unit bins, centres 0.5, 1.5, 2.5
    members = [_constant([0.0, math.log(2.0), 0.0]), _constant([0.0, 0.0, 0.0])]
    temps = [{n: 0.5 for n in LABEL_NAMES}, {n: 3.0 for n in LABEL_NAMES}]
    pretrained = _constant([math.log(3.0), math.log(2.0), 0.0])
    stars = SpectraSet(np.arange(4.0), np.ones((2, 4), np.float32), np.ones((2, 4)), np.zeros((2, 4), bool),
                       np.full((2, 3), 1.5), np.array(["a", "b"]), INSTRUMENT)
    rows = inference_ablations(members, temps, pretrained, stars, bins)
    assert [r["method"] for r in rows] == list(INFERENCE_ABLATIONS)
    # member 0 at T = ½: softmax(0, 2 ln 2, 0) = (1, 4, 1)/6; member 1 is uniform at any T
    by_hand = {"full method": [0.25, 0.5, 0.25], "no temperature scaling": [7 / 24, 10 / 24, 7 / 24],
               "single model instead of the ensemble": [1 / 6, 4 / 6, 1 / 6],
               "no fine-tuning (pretrained only)": [3 / 6, 2 / 6, 1 / 6]}
    for row in rows:
        pmf = np.tile(by_hand[row["method"]], (2, 1))
        expected = score_row(row["method"], {n: {**bins[n].decode(pmf), "pmf": pmf} for n in LABEL_NAMES},
                             stars.labels, bins)
        assert row == pytest.approx(expected)
    # the symmetric PMFs have median 1.5 = truth; the pretrained one has half its mass below 1
    assert rows[0]["bias_teff"] == pytest.approx(0.0)
    assert rows[3]["bias_logg"] == pytest.approx(1.0 - 1.5)
