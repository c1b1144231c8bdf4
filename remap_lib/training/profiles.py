"""Parameter profiles per pipeline step, shared by the notebooks, the CLI and the tests.

``smoke`` runs in seconds to a few minutes (tests), ``default`` is the rendered book on a 2-core
CPU, ``paper`` is the full-scale run for a GPU. Each step's parameters start from one set of
defaults (for training: the :class:`~remap_lib.training.config.TrainConfig` and
:class:`~remap_lib.nn.model.ModelConfig` dataclass defaults, and :func:`~remap_lib.training.transfer.finetune_config`
for fine-tuning); a profile lists only where it differs. A notebook's ``parameters`` cell names a
profile and may override any value; ``None`` means "take it from the profile"::

    resolve("finetune", "smoke", epochs=3)
"""

from __future__ import annotations

import copy
import functools

#: How notebook 04 / `remap calibrate` fit temperatures: "nll", Guo et al.'s cross-entropy fit per member;
#: "coverage", one temperature per head shared by the members, fitted to the ensemble's interval coverage.
CALIBRATION_METHODS = ("nll", "coverage")

#: What the SWA average's batch-norm statistics can be recomputed on (``TrainConfig.swa_bn_rows``): "training",
#: the labelled training rows alone; "epoch", an epoch's mix of them with the rehearsed and distilled rows.
SWA_BN_ROWS = ("training", "epoch")

PROFILE_NAMES = ("smoke", "default", "paper")


def _pretrain_defaults() -> dict:
    from remap_lib.nn.model import ModelConfig
    from remap_lib.training.config import TrainConfig

    t, m = TrainConfig(), ModelConfig()
    return {"epochs": t.epochs, "batch_size": t.batch_size, "lr": t.lr, "gamma": t.gamma, "cost_weight": t.cost_weight,
            "triplet_weight": t.triplet_weight, "swa_start": t.swa_start, "stage_channels": list(m.stage_channels),
            "blocks_per_stage": m.blocks_per_stage, "mse_baseline": True, "threads": t.threads,
            "node_mix": t.node_mix}


def _finetune_defaults() -> dict:
    from remap_lib.training.transfer import (
        DISTILL_RATIO,
        DISTILLED_LABELS,
        NOISE_MATCHED_SNR_MIN,
        REHEARSAL_RATIO,
        finetune_config,
    )

    c = finetune_config()
    # remap's recipe, the study's "giant distillation + noise-matched augmentation, Teff and log g only" row:
    # rehearsal of the grid, the giant candidates' spectra distilled without labels (their Teff and log g),
    # noise down to S/N 5
    return {"epochs": c.epochs, "batch_size": c.batch_size, "lr": c.lr, "freeze_epochs": c.freeze_epochs,
            "backbone_lr_factor": c.backbone_lr_factor, "members": 3, "swa_start": c.swa_start,
            "swa_bn_rows": c.swa_bn_rows,
            "rehearsal": REHEARSAL_RATIO, "noise_snr_min": NOISE_MATCHED_SNR_MIN, "distill": DISTILL_RATIO,
            "distill_labels": list(DISTILLED_LABELS)}


def _ablation_defaults() -> dict:
    from remap_lib.training.config import TrainConfig

    # smaller networks than pretraining's, so that every variant trains in minutes
    return {"pretrain_epochs": 20, "finetune_epochs": 20, "stage_channels": [8, 16, 32, 64], "blocks_per_stage": 1,
            "batch_size": TrainConfig().batch_size}


#: Each step's defaults (a function, so that steps without training do not import torch).
STEP_DEFAULTS = {
    "prepare": lambda: {"instrument": "miles", "max_grid_spectra": None, "max_miles_stars": None,
                        "test_fraction": 0.1, "val_fraction": 0.1},
    "pretrain": _pretrain_defaults,
    "finetune": _finetune_defaults,
    # calibration: one of CALIBRATION_METHODS
    "calibrate": lambda: {"calibration": "nll"},
    "ablations": _ablation_defaults,
    "predict": lambda: {"n_stars": 120},
}

#: Where each profile differs from its step's defaults.
DIFFERENCES: dict[str, dict[str, dict]] = {
    "prepare": {"smoke": {"max_grid_spectra": 120}, "paper": {"instrument": "marvels"}},
    "pretrain": {
        "smoke": {"epochs": 2, "batch_size": 32, "swa_start": 0.5, "stage_channels": [8, 16, 32],
                  "blocks_per_stage": 1},
        "default": {"epochs": 120, "stage_channels": [16, 32, 64, 128]},
        "paper": {"epochs": 150, "batch_size": 128, "blocks_per_stage": 3, "threads": 8},
    },
    "finetune": {
        "smoke": {"epochs": 2, "freeze_epochs": 1, "members": 1, "swa_start": 0.5},
        "default": {"epochs": 60},
        "paper": {"epochs": 60, "members": 5},
    },
    "ablations": {
        "smoke": {"pretrain_epochs": 1, "finetune_epochs": 1, "stage_channels": [8, 16]},
        "paper": {"pretrain_epochs": 150, "finetune_epochs": 60, "stage_channels": [32, 64, 128, 256],
                  "blocks_per_stage": 3, "batch_size": 128},
    },
    "predict": {"smoke": {"n_stars": 12}, "paper": {"n_stars": 371}},
}

STEPS = tuple(STEP_DEFAULTS)


@functools.cache
def _step_table(step: str) -> dict[str, dict]:
    defaults = STEP_DEFAULTS[step]()
    diffs = DIFFERENCES.get(step, {})
    return {name: {**defaults, **diffs.get(name, {})} for name in PROFILE_NAMES}


def step_profiles(step: str) -> dict[str, dict]:
    """``{profile: parameters}`` of one step (a copy)."""
    if step not in STEP_DEFAULTS:
        raise ValueError(f"no profiles for step {step!r}; known: {sorted(STEP_DEFAULTS)}")
    return copy.deepcopy(_step_table(step))


def __getattr__(name):
    # PROFILES ({step: {profile: parameters}}) is built on first use: the training steps import torch
    if name == "PROFILES":
        return {step: step_profiles(step) for step in STEPS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve(step: str, profile: str, **overrides) -> dict:
    """The profile's parameters for pipeline ``step`` with every non-None override applied."""
    table = step_profiles(step)  # a copy: callers may modify lists without touching the table
    if profile not in table:
        raise ValueError(f"unknown profile {profile!r} for {step}; choose from {sorted(table)}")
    params = table[profile]
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"{step} has no parameter(s) {sorted(unknown)}; it takes {sorted(params)}")
    params.update({k: v for k, v in overrides.items() if v is not None})
    return params
