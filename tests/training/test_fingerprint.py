"""What a checkpoint's fingerprint depends on, and what it leaves out."""

from dataclasses import replace

import numpy as np
import torch
from toydata import TINY_ARCH, toy_set

from remap_lib.training.config import TrainConfig
from remap_lib.training.fingerprint import data_sha256, sha256_of, training_fingerprint
from remap_lib.training.train import build_model


def test_sha256_of_chunks_is_the_sha256_of_their_concatenation():
    import hashlib

    assert sha256_of(b"ab", b"c") == hashlib.sha256(b"abc").hexdigest()


def test_data_hash_sees_every_part_of_a_set():
    data = toy_set()
    base = data_sha256(data)
    flux = data.flux.copy()
    flux[0, 0] += 1e-6
    assert data_sha256(replace(data, flux=flux)) != base
    labels = data.labels.copy()
    labels[3, 1] += 0.01
    assert data_sha256(replace(data, labels=labels)) != base
    assert data_sha256(data.select(np.arange(1, len(data)))) != base
    assert data_sha256(data) == base


def test_fingerprint_leaves_out_what_acts_after_training():
    data = toy_set()
    torch.manual_seed(0)
    model = build_model(data.flux.shape[1], **TINY_ARCH)
    cfg = TrainConfig()
    first = training_fingerprint(cfg, data, model)
    assert set(first) == {"settings", "training data", "starting weights"}
    assert training_fingerprint(replace(cfg, swa_bn_rows="epoch"), data, model) == first
    assert training_fingerprint(replace(cfg, lr=cfg.lr / 2), data, model)["settings"] != first["settings"]
    torch.manual_seed(1)
    other = build_model(data.flux.shape[1], **TINY_ARCH)
    assert training_fingerprint(cfg, data, other)["starting weights"] != first["starting weights"]
