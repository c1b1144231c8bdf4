"""The study's training budgets: what each row trains with, read from the notebooks' profiles.

``default`` is notebook 03's fine-tuning (the shipped recipe's budget), ``reduced`` notebook 07's
smaller pretraining and fine-tuning (the ablations); each row's :class:`~remap_lib.evaluation.studyrows.Row`
changes apply on top. Member k of a run fine-tunes with seed :func:`member_seed` (run seed, k).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from remap_lib.evaluation.studyrows import PAPER_NETWORK, PRETRAINING_NETWORK, Row
from remap_lib.training.augment import AugmentConfig
from remap_lib.training.config import TrainConfig
from remap_lib.training.profiles import resolve
from remap_lib.training.transfer import finetune_config


def _network(step: dict) -> dict:
    """The stages and blocks a step's parameters give its network."""
    return {"stage_channels": tuple(step["stage_channels"]), "blocks_per_stage": step["blocks_per_stage"]}


def member_seed(seed: int, k: int) -> int:
    """The fine-tuning seed of member ``k`` of run seed ``seed``: replicates never share a member."""
    return 100 * seed + k


@dataclass
class Budgets:
    """Training budgets: ``default`` (03_finetune parameters) and ``reduced`` (07_ablations + ``members``).

    ``overrides`` apply to every TrainConfig (threads; the tests switch augmentation off).
    ``networks`` are the pretraining networks some rows train at the reduced budget (:attr:`Row.network`):
    :data:`PRETRAINING_NETWORK`, the one notebook 02 pretrains in this profile, and :data:`PAPER_NETWORK`, the
    ``paper`` profile's.
    """

    default: dict
    reduced: dict
    overrides: dict = field(default_factory=dict)
    networks: dict = field(default_factory=dict)

    @classmethod
    def from_profiles(cls, profile: str = "default", threads: int = 1) -> Budgets:
        default = resolve("finetune", profile)
        reduced = {**resolve("ablations", profile), "members": default["members"]}
        networks = {name: _network(resolve("pretrain", of))
                    for name, of in ((PRETRAINING_NETWORK, profile), (PAPER_NETWORK, "paper"))}
        return cls(default, reduced, {"threads": threads}, networks)

    def describe(self) -> dict:
        # each row states its own rehearsal and noise (the profile's are what notebook 03 ships)
        default = {k: v for k, v in self.default.items()
                   if k not in ("rehearsal", "noise_snr_min", "distill", "distill_labels")}
        return {"default": {**default, "pretrained": "the profile's shipped (or own) pretrained network"},
                "reduced": {**self.reduced, "scratch_epochs": self.scratch_epochs},
                "networks": {name: {k: (list(v) if isinstance(v, tuple) else v) for k, v in arch.items()}
                             for name, arch in self.networks.items()}, "overrides": {
                    k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in self.overrides.items()}}

    @property
    def scratch_epochs(self) -> int:
        return int(self.reduced["pretrain_epochs"] + self.reduced["finetune_epochs"])

    @property
    def arch(self) -> dict:
        return {**_network(self.reduced), **self.reduced.get("arch", {})}

    def arch_for(self, row: Row) -> dict:
        """The network ``row`` trains: the reduced one, or for a row with a ``network`` the reduced one with that
        pretraining network's stages and blocks (the rest, such as the embedding, stays the reduced network's)."""
        if row.network is None:
            return self.arch
        if row.network not in self.networks:
            raise ValueError(f"row {row.name!r} trains the {row.network!r} network, but these budgets do not "
                             f"name it (they name {sorted(self.networks)}; Budgets.from_profiles reads them "
                             "from the profiles)")
        return {**self.arch, **self.networks[row.network]}

    def repeats_reduced(self, row: Row) -> bool:
        """A row with a ``network`` that these budgets' reduced rows train already (the ``paper`` profile's
        ablations train the paper network): it would only repeat ``deep-REMAP (reduced budget)``."""
        return row.network is not None and self.arch_for(row) == self.arch

    def members(self, row: Row) -> int:
        return int((self.default if row.budget == "default" else self.reduced)["members"])

    def finetune(self, row: Row, seed: int) -> TrainConfig:
        """Fine-tuning settings of ``row`` (member 0; member k adds k to the seed)."""
        if row.budget == "default":
            p = self.default
            cfg = finetune_config(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"],
                                  freeze_epochs=p["freeze_epochs"], backbone_lr_factor=p["backbone_lr_factor"],
                                  swa_start=p["swa_start"], seed=member_seed(seed, 0))
            if row.kind == "mse":
                cfg = replace(cfg, triplet_weight=0.0)  # as notebook 03 fine-tunes the MSE twin
        elif row.kind == "scratch":  # every weight learns from the start, at the pretraining rate
            cfg = finetune_config(epochs=self.scratch_epochs, freeze_epochs=0, backbone_lr_factor=1.0,
                                  lr=TrainConfig.lr, seed=member_seed(seed, 0))
        else:  # as notebook 07 fine-tunes its rows
            e = self.reduced["finetune_epochs"]
            cfg = finetune_config(epochs=e, freeze_epochs=min(3, e // 3), seed=member_seed(seed, 0))
        return replace(cfg, **{**row.change, **self.overrides})

    def pretrain(self, row: Row, seed: int) -> TrainConfig:
        p = self.reduced
        cfg = TrainConfig(epochs=p["pretrain_epochs"], batch_size=p["batch_size"], seed=seed, augment=AugmentConfig())
        return replace(cfg, **{**row.change, **row.pretrain_change, **self.overrides})
