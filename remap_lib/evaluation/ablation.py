"""Ablations: the full method with one ingredient switched off, pretrained and fine-tuned anew.

Each variant repeats pretraining → fine-tuning → temperature scaling with the same (reduced) budget
as the "full method" row it is compared with, and is scored on the calibration stars. The
inference-time ablations (no temperature scaling, single model, no fine-tuning) need no retraining:
:func:`inference_ablations` scores them on the trained ensemble (notebook 05).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from remap_lib.data.dataset import SpectraSet
from remap_lib.evaluation import calibrate
from remap_lib.evaluation.evaluate import score_row
from remap_lib.evaluation.forward import ensemble_mean, forward
from remap_lib.nn.modelfile import save_model
from remap_lib.training.config import TrainConfig
from remap_lib.training.train import Trainer, build_model
from remap_lib.training.transfer import LITERATURE_SIGMA, ensemble_pmfs, finetune, summarize

#: The rows of :func:`inference_ablations`, in order.
INFERENCE_ABLATIONS = ("full method", "no temperature scaling", "single model instead of the ensemble",
                       "no fine-tuning (pretrained only)")

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


def inference_ablations(models, temperatures, pretrained, data: SpectraSet, bins) -> list[dict]:
    """The trained ensemble with one inference-time ingredient switched off, scored on ``data``.

    One :func:`~remap_lib.evaluation.evaluate.score_row` per :data:`INFERENCE_ABLATIONS` name: the
    calibrated ensemble (``models`` with their ``temperatures``), the same without temperatures,
    member 0 alone with its temperatures, and the ``pretrained`` network alone, untempered.
    """
    # each network runs once; the rows differ only in which logits they average and how tempered
    logits = [forward(model, data.flux, data.mask)["logits"] for model in models]
    pmfs = {
        "full method": ensemble_mean(logits, temperatures),
        "no temperature scaling": ensemble_mean(logits, None),
        "single model instead of the ensemble": ensemble_mean(logits[:1], temperatures[:1]),
        "no fine-tuning (pretrained only)": ensemble_mean([forward(pretrained, data.flux, data.mask)["logits"]]),
    }
    return [score_row(name, summarize(pmfs[name], bins), data.labels, bins) for name in INFERENCE_ABLATIONS]
