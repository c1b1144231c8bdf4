"""Parameter profiles shared by the notebooks, the CLI and the tests.

``smoke`` runs in seconds to a few minutes (tests), ``default`` is the rendered book on a 2-core
CPU, ``paper`` is the full-scale run for a GPU. A notebook's ``parameters`` cell names a profile
and may override any value; ``None`` means "take it from the profile".
"""

from __future__ import annotations

import copy

#: How notebook 04 / `remap calibrate` fit temperatures: "nll", Guo et al.'s cross-entropy fit per member;
#: "coverage", one temperature per head shared by the members, fitted to the ensemble's interval coverage.
CALIBRATION_METHODS = ("nll", "coverage")

PROFILES: dict[str, dict[str, dict]] = {
    "01_data_prep": {
        "smoke": {"instrument": "miles", "max_grid_spectra": 120, "max_miles_stars": None,
                  "test_fraction": 0.1, "val_fraction": 0.1},
        "default": {"instrument": "miles", "max_grid_spectra": None, "max_miles_stars": None,
                    "test_fraction": 0.1, "val_fraction": 0.1},
        "paper": {"instrument": "marvels", "max_grid_spectra": None, "max_miles_stars": None,
                  "test_fraction": 0.1, "val_fraction": 0.1},
    },
    "02_pretrain": {
        "smoke": {"epochs": 2, "batch_size": 32, "lr": 2e-3, "gamma": 2.0, "cost_weight": 1.0,
                  "triplet_weight": 0.1, "swa_start": 0.5, "stage_channels": [8, 16, 32], "blocks_per_stage": 1,
                  "mse_baseline": True, "threads": 2},
        "default": {"epochs": 120, "batch_size": 64, "lr": 2e-3, "gamma": 2.0, "cost_weight": 1.0,
                    "triplet_weight": 0.1, "swa_start": 0.75, "stage_channels": [16, 32, 64, 128],
                    "blocks_per_stage": 2, "mse_baseline": True, "threads": 2},
        "paper": {"epochs": 150, "batch_size": 128, "lr": 2e-3, "gamma": 2.0, "cost_weight": 1.0,
                  "triplet_weight": 0.1, "swa_start": 0.75, "stage_channels": [32, 64, 128, 256],
                  "blocks_per_stage": 3, "mse_baseline": True, "threads": 8},
    },
    "03_finetune": {
        "smoke": {"epochs": 2, "batch_size": 32, "lr": 1e-3, "freeze_epochs": 1, "backbone_lr_factor": 0.1,
                  "members": 1, "swa_start": 0.5, "rehearsal": 0.0},
        "default": {"epochs": 60, "batch_size": 32, "lr": 1e-3, "freeze_epochs": 5, "backbone_lr_factor": 0.1,
                    "members": 3, "swa_start": 0.75, "rehearsal": 0.0},
        "paper": {"epochs": 60, "batch_size": 32, "lr": 1e-3, "freeze_epochs": 5, "backbone_lr_factor": 0.1,
                  "members": 5, "swa_start": 0.75, "rehearsal": 0.0},
    },
    # calibration: one of CALIBRATION_METHODS
    "04_calibrate": {
        "smoke": {"calibration": "nll"},
        "default": {"calibration": "nll"},
        "paper": {"calibration": "nll"},
    },
    "09_predict": {
        "smoke": {"n_stars": 12},
        "default": {"n_stars": 120},
        "paper": {"n_stars": 371},
    },
    "07_ablations": {
        "smoke": {"pretrain_epochs": 1, "finetune_epochs": 1, "stage_channels": [8, 16], "blocks_per_stage": 1,
                  "batch_size": 64},
        "default": {"pretrain_epochs": 20, "finetune_epochs": 20, "stage_channels": [8, 16, 32, 64],
                    "blocks_per_stage": 1, "batch_size": 64},
        "paper": {"pretrain_epochs": 150, "finetune_epochs": 60, "stage_channels": [32, 64, 128, 256],
                  "blocks_per_stage": 3, "batch_size": 128},
    },
}


def resolve(notebook: str, profile: str, **overrides) -> dict:
    """The profile's parameters for ``notebook`` with every non-None override applied."""
    try:
        table = PROFILES[notebook]
    except KeyError:
        raise ValueError(f"no profiles for notebook {notebook!r}; known: {sorted(PROFILES)}") from None
    if profile not in table:
        raise ValueError(f"unknown profile {profile!r} for {notebook}; choose from {sorted(table)}")
    params = copy.deepcopy(table[profile])  # callers may modify lists without touching the table
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"{notebook} has no parameter(s) {sorted(unknown)}; it takes {sorted(params)}")
    params.update({k: v for k, v in overrides.items() if v is not None})
    return params
