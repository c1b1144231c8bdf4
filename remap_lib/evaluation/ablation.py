"""Ablations: the full method with one ingredient switched off, pretrained and fine-tuned anew.

Each variant repeats pretraining → fine-tuning → temperature scaling with the same (reduced) budget
as the "full method" row it is compared with, and is scored on the calibration stars. The
inference-time ablations (no fine-tuning, no temperature scaling, single model) need no retraining
and are made in notebook 05.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from remap_lib.data.dataset import SpectraSet
from remap_lib.evaluation import calibrate
from remap_lib.evaluation.evaluate import score_row
from remap_lib.nn.modelfile import save_model
from remap_lib.training.train import TrainConfig, Trainer, build_model
from remap_lib.training.transfer import LITERATURE_SIGMA, ensemble_pmfs, finetune, summarize

#: One change each to the full method's training settings (applied to pretraining and fine-tuning).
VARIANTS: dict[str, dict] = {
    "full method": {},
    "focal loss -> cross-entropy": {"gamma": 0.0},
    "no cost matrix": {"cost_weight": 0.0},
    "no triplet loss": {"triplet_weight": 0.0},
    "no SWA": {"swa_start": 1.0},
}


def run_variant(name: str, synthetic_train: SpectraSet, finetune_set: SpectraSet, validation: SpectraSet,
                calibration: SpectraSet, pretrain_config: TrainConfig, finetune_config: TrainConfig, arch: dict,
                bins, out_dir, progress: bool = True) -> dict:
    """Pretrain, fine-tune and calibrate one variant.

    Returns its :func:`~remap_lib.evaluation.evaluate.score_row` on ``calibration``.
    """
    change = VARIANTS[name]
    out = Path(out_dir) / name.replace(" ", "_").replace(">", "").replace("-", "")
    pre_cfg, ft_cfg = replace(pretrain_config, **change), replace(finetune_config, **change)
    torch.manual_seed(pre_cfg.seed)
    model = build_model(synthetic_train.flux.shape[1], bins, **arch)
    trainer = Trainer(model, synthetic_train, pre_cfg, bins, out_dir=out / "pretrain")
    pretrained = save_model(out / "pretrained.pt", trainer.fit(progress=progress).model, bins,
                            synthetic_train.instrument, pre_cfg.to_dict(), trainer.label_stats)
    result, _ = finetune(pretrained, finetune_set, validation, ft_cfg, out / "finetune", progress)
    logits = calibrate.collect_logits(result.model, validation.flux, validation.mask)
    temps = calibrate.fit_temperatures(logits, validation.labels, bins, label_sigma=LITERATURE_SIGMA)
    pred = summarize(ensemble_pmfs([result.model], calibration.flux, calibration.mask, [temps]), bins)
    return score_row(name, pred, calibration.labels, bins)
