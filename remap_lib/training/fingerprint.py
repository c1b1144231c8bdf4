"""What a training run's outcome depends on, hashed: a checkpoint resumes only when it matches.

:func:`training_fingerprint` hashes a run's settings, its training data (:func:`data_sha256`) and its
starting weights; :class:`remap_lib.training.train.Trainer` adds its rehearsal and distillation sets.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from remap_lib.data.dataset import SpectraSet
from remap_lib.nn.modelfile import weights_sha256
from remap_lib.training.config import AFTER_TRAINING, TrainConfig


def sha256_of(*chunks: bytes) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def data_sha256(data: SpectraSet) -> str:
    """Hash of what training reads from a set: ids, flux, inverse variance, mask and labels."""
    return sha256_of("\n".join(str(i) for i in data.ids).encode(),
                   *(np.ascontiguousarray(a).tobytes() for a in (data.flux, data.ivar, data.mask, data.labels)))


def training_fingerprint(config: TrainConfig, train: SpectraSet, model: torch.nn.Module) -> dict[str, str]:
    """What a training run's outcome depends on: its settings, its training data and its starting weights.

    A checkpoint resumes only when all three match, so rerunning a notebook after changing any of
    them (a parameter, the held-out stars, the pretrained network) trains anew instead of reusing
    stale work. Settings applied only once training has finished (:data:`AFTER_TRAINING`) are left out: a
    finished checkpoint resumes and applies them without training again.
    """
    settings = {k: v for k, v in config.to_dict().items() if k not in AFTER_TRAINING}
    return {"settings": sha256_of(json.dumps(settings, sort_keys=True).encode()),
            "training data": data_sha256(train), "starting weights": weights_sha256(model.state_dict())}
