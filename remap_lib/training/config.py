"""The settings of one training run, pretraining or fine-tuning: :class:`TrainConfig`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from remap_lib.constants import LABEL_SCALES
from remap_lib.training.augment import AugmentConfig

#: TrainConfig fields used only after the last epoch (by :meth:`remap_lib.training.train.Trainer.final_model`).
AFTER_TRAINING = ("swa_bn_rows",)
#: Soft-target widths around the exact labels of synthetic spectra (our choice, about a bin): Teff, log g, [Fe/H].
SYNTHETIC_LABEL_SIGMA = (50.0, 0.1, 0.05)


@dataclass
class TrainConfig:
    """Optimization and loss settings (the paper's ingredients; the values are our choices)."""

    epochs: int = 40
    batch_size: int = 64  # global batch, split across DDP ranks
    lr: float = 2e-3
    min_lr_fraction: float = 0.02
    weight_decay: float = 1e-4
    restart_epochs: int | None = None  # cosine warm restarts every N epochs; None: one cosine over the run
    warmup_epochs: float = 1.0
    swa_start: float = 0.75  # fraction of the epochs after which weights are averaged (1.0: no SWA)
    swa_lr: float = 3e-4
    # rows the SWA average's batch-norm statistics are recomputed on: "training" (the labelled training rows
    # alone, the target domain) or "epoch" (an epoch's mix of them with rehearsal and distillation rows, the
    # batches the weights were trained on)
    swa_bn_rows: str = "training"
    gamma: float = 2.0
    cost_weight: float = 1.0
    cost_sigma: tuple[float, float, float] | None = LABEL_SCALES
    triplet_weight: float = 0.1
    triplet_margin: float = 0.2
    # Width of the soft targets around exact synthetic labels (our choice, ~ a bin)
    label_sigma: tuple[float, float, float] = SYNTHETIC_LABEL_SIGMA
    grad_clip: float = 5.0
    # transfer learning: the stem and backbone are frozen for the first `freeze_epochs`, then train at
    # `backbone_lr_factor` times the heads' learning rate
    freeze_epochs: int = 0
    backbone_lr_factor: float = 1.0
    seed: int = 0
    threads: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # chance that a training row of a batch is replaced by an interpolation with a neighbouring grid node
    # (:mod:`remap_lib.training.nodemix`); for training on a synthetic grid only
    node_mix: float = 0.0
    # weight of the class-conditional MMD between the features of a batch's rehearsed synthetic spectra and
    # its observed ones (:mod:`remap_lib.nn.alignment`); for fine-tuning with rehearsal only
    align_weight: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        # absent when off, so configs (and fingerprints) from before these options stay as they were
        if not self.node_mix:
            del d["node_mix"]
        if not self.align_weight:
            del d["align_weight"]
        if self.swa_bn_rows == "training":
            del d["swa_bn_rows"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["augment"] = AugmentConfig.from_dict(d["augment"])
        for key in ("cost_sigma", "label_sigma"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)
