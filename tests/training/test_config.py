"""TrainConfig: its dictionary form, which checkpoints and study records store."""

from dataclasses import replace

from remap_lib.training.augment import AugmentConfig
from remap_lib.training.config import TrainConfig


def test_round_trip_through_a_dict():
    cfg = TrainConfig(epochs=7, cost_sigma=(1.0, 2.0, 3.0), node_mix=0.5, align_weight=2.0, swa_bn_rows="epoch",
                      augment=AugmentConfig.none())
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg and isinstance(again.cost_sigma, tuple) and isinstance(again.augment, AugmentConfig)


def test_options_left_at_their_default_are_absent_so_old_configs_keep_their_form():
    d = TrainConfig().to_dict()
    assert not {"node_mix", "align_weight", "swa_bn_rows"} & set(d)
    assert {"node_mix", "align_weight", "swa_bn_rows"} <= set(
        replace(TrainConfig(), node_mix=0.5, align_weight=1.0, swa_bn_rows="epoch").to_dict())
