"""Training: cosine-annealed AdamW, stochastic weight averaging, atomic checkpoints, exact resume, DDP.

One code path serves a laptop and a cluster. Run as a script under ``torchrun`` and every rank
takes its share of each global batch (gloo on CPU, nccl on GPU); rank 0 writes checkpoints and the
metrics log. Everything random in an epoch (data order, augmentation, dropout) is seeded from
``(seed, epoch)``, so a run killed after epoch k and resumed from its checkpoint ends with the same
weights as a run that was never interrupted.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from remap_lib.constants import GIANT_LOGG, LABEL_NAMES
from remap_lib.data.dataset import SpectraSet
from remap_lib.distributed import init_distributed
from remap_lib.fileio import atomic_write
from remap_lib.nn.alignment import class_conditional_mmd2
from remap_lib.nn.binning import DEFAULT_BINS, LabelBins
from remap_lib.nn.losses import MultiTaskLoss
from remap_lib.nn.model import DeepREMAP
from remap_lib.training.augment import AugmentConfig, Augmenter
from remap_lib.training.config import SYNTHETIC_LABEL_SIGMA, TrainConfig
from remap_lib.training.fingerprint import data_sha256, sha256_of, training_fingerprint
from remap_lib.training.nodemix import lattice_neighbours, mix_with_neighbours
from remap_lib.training.profiles import SWA_BN_ROWS


def _init_distributed(device: torch.device) -> tuple[int, int]:
    return init_distributed("nccl" if device.type == "cuda" else "gloo")


def learning_rate(config: TrainConfig, epoch_float: float) -> float:
    """LR at a fractional epoch: linear warm-up, cosine annealing (optionally restarted), then SWA's constant LR."""
    swa_epoch = config.swa_start * config.epochs
    if config.swa_start < 1.0 and epoch_float >= swa_epoch:
        return config.swa_lr
    if epoch_float < config.warmup_epochs:
        return config.lr * (epoch_float + 1e-3) / config.warmup_epochs
    # one cosine from the end of warm-up to the start of SWA (or the end), unless restarts are asked for
    end = swa_epoch if config.swa_start < 1.0 else config.epochs
    span = config.restart_epochs or max(end - config.warmup_epochs, 1e-9)
    phase = ((epoch_float - config.warmup_epochs) % span) / span
    low = config.lr * config.min_lr_fraction
    return low + 0.5 * (config.lr - low) * (1.0 + math.cos(math.pi * phase))


def _generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    # distinct, reproducible streams per (seed, epoch, purpose)
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch) * 101 + stream)


@dataclass
class FitResult:
    model: DeepREMAP  # the SWA model when SWA ran, else the last weights
    history: list[dict]
    config: TrainConfig
    seconds: float


def _targets(labels: torch.Tensor, bins: dict[str, LabelBins], sigma) -> dict[str, torch.Tensor]:
    """Soft targets; ``sigma`` is None, one width per label (3,), or one per row and label (n, 3)."""
    lab = labels.numpy()
    widths = None if sigma is None else np.broadcast_to(np.asarray(sigma, dtype=np.float64), lab.shape)
    return {name: torch.from_numpy(bins[name].soft_targets(lab[:, j], None if widths is None else widths[:, j]))
            for j, name in enumerate(LABEL_NAMES)}


class Trainer:
    """Fits a :class:`DeepREMAP` on a :class:`SpectraSet` (classification or regression heads)."""

    def __init__(self, model: DeepREMAP, train: SpectraSet, config: TrainConfig, bins=None,
                 val: SpectraSet | None = None, out_dir=None, device=None, label_stats=None,
                 rehearsal: SpectraSet | None = None, rehearsal_ratio: float = 0.0,
                 distill: SpectraSet | None = None, distill_targets: dict | None = None, distill_ratio: float = 0.0):
        """``rehearsal``: synthetic spectra mixed into every epoch while fine-tuning, ``rehearsal_ratio``
        of them per ``train`` spectrum (drawn anew each epoch), with soft targets of the synthetic
        width, so that what pretraining learnt outside ``train``'s label range is not forgotten.

        ``distill``: unlabelled spectra mixed in the same way, ``distill_ratio`` per ``train``
        spectrum, whose targets are the PMFs ``distill_targets`` (per label, (n, nbins): the start
        network's own, learning without forgetting); their labels are unknown, so the triplet term
        skips them."""
        self.config = config
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.set_num_threads(config.threads)
        self.rank, self.world = _init_distributed(self.device)
        self.bins = dict(bins or DEFAULT_BINS)
        self.regression = model.config.head == "regression"
        self.model = model.to(self.device)
        self.train_set, self.val_set = train, val
        self.out_dir = Path(out_dir) if out_dir else None
        self.flux = torch.as_tensor(train.flux, dtype=torch.float32)
        self.ivar = torch.as_tensor(np.nan_to_num(train.ivar, posinf=np.inf), dtype=torch.float32)
        self.mask = torch.as_tensor(train.mask, dtype=torch.bool)
        self.labels = torch.as_tensor(train.labels, dtype=torch.float32)
        self.n_main = len(train)  # rows of `train`; rehearsal rows, then distillation rows, follow them
        self.rehearsal_ratio = float(rehearsal_ratio) if rehearsal is not None and len(rehearsal) else 0.0
        self.distill_ratio = float(distill_ratio) if distill is not None and len(distill) else 0.0
        for name, ratio in (("rehearsal_ratio", rehearsal_ratio), ("distill_ratio", distill_ratio)):
            if ratio < 0:
                raise ValueError(f"{name} must be >= 0, got {ratio}")
        self.row_sigma = None
        self.n_rehearsal = len(rehearsal) if self.rehearsal_ratio > 0 else 0
        self.teacher: dict[str, torch.Tensor] | None = None  # distillation targets, zero on the other rows
        if self.rehearsal_ratio > 0:
            self._append_rows(rehearsal, "rehearsal", rehearsal.labels)
        if self.distill_ratio > 0:
            if distill_targets is None or any(len(distill_targets[n]) != len(distill) for n in self.bins):
                raise ValueError(f"distillation needs one target PMF per label for each of its {len(distill)} spectra")
            self._append_rows(distill, "distillation", np.full((len(distill), 3), np.nan))
            n_before = len(self.flux) - len(distill)
            self.teacher = {n: torch.cat([torch.zeros((n_before, self.bins[n].nbins)),
                                          torch.as_tensor(np.asarray(distill_targets[n]), dtype=torch.float32)])
                            for n in self.bins}
        if len(self.flux) > self.n_main:
            extra = len(self.flux) - self.n_main  # distillation rows have no labels, so no width either
            self.row_sigma = np.concatenate([np.broadcast_to(np.asarray(config.label_sigma, float), (self.n_main, 3)),
                                             np.broadcast_to(np.asarray(SYNTHETIC_LABEL_SIGMA), (extra, 3))])
        # Standardization for the regression baseline: fixed from the training labels
        mean = np.nanmean(train.labels, axis=0) if label_stats is None else np.asarray(label_stats[0])
        std = np.nanstd(train.labels, axis=0) if label_stats is None else np.asarray(label_stats[1])
        self.label_stats = (mean.tolist(), np.maximum(std, 1e-6).tolist())
        self.augmenter = Augmenter(train.wave, train.instrument, config.augment)
        if config.swa_bn_rows not in SWA_BN_ROWS:
            raise ValueError(f"swa_bn_rows must be one of {SWA_BN_ROWS}, got {config.swa_bn_rows!r}")
        self.align_giant = self._alignment_classes() if config.align_weight else None
        self.node_table = None
        if config.node_mix:
            if not 0.0 < config.node_mix <= 1.0:
                raise ValueError(f"node_mix must be in (0, 1] (0 turns it off), got {config.node_mix}")
            self.node_table = lattice_neighbours(train.labels)
        self.loss_fn = MultiTaskLoss(list(self.bins.values()), gamma=config.gamma, cost_sigma=config.cost_sigma,
                                     cost_weight=config.cost_weight, triplet_weight=config.triplet_weight,
                                     triplet_margin=config.triplet_margin).to(self.device)
        self.ddp_model = model
        if self.world > 1:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        backbone = [*model.stem.parameters(), *model.backbone.parameters()]
        ids = {id(q) for q in backbone}
        heads = [q for q in model.parameters() if id(q) not in ids]
        self.optimizer = torch.optim.AdamW([{"params": backbone, "name": "backbone"},
                                            {"params": heads, "name": "heads"}],
                                           lr=config.lr, weight_decay=config.weight_decay)
        self.swa = AveragedModel(model) if config.swa_start < 1.0 else None
        self.history: list[dict] = []
        self.epoch = 0
        self.fingerprint = training_fingerprint(config, train, model)
        if self.rehearsal_ratio > 0:  # absent otherwise, so runs without rehearsal keep their fingerprints
            self.fingerprint["rehearsal"] = sha256_of(data_sha256(rehearsal).encode(),
                                                    f"{self.rehearsal_ratio!r}".encode())
        if self.distill_ratio > 0:
            self.fingerprint["distillation"] = sha256_of(
                data_sha256(distill).encode(), f"{self.distill_ratio!r}".encode(),
                *(np.ascontiguousarray(distill_targets[n], dtype=np.float32).tobytes() for n in self.bins))
        self.resume_note = ""  # why the last fit() resumed or started afresh (also printed)

    def _alignment_classes(self) -> torch.Tensor:
        """Each row's class for the feature alignment: 1 giant, 0 dwarf, -1 unknown (left out).

        Labelled rows (the training stars and the rehearsed grid) by their log g; distilled rows, whose
        labels are unknown, by the start network's reading of them (the mean of its log g PMF), so no
        observed giant's label is read.
        """
        if self.config.align_weight < 0:
            raise ValueError(f"align_weight must be >= 0, got {self.config.align_weight}")
        if self.n_rehearsal == 0:
            raise ValueError("align_weight > 0 aligns the rehearsed synthetic spectra with the observed ones: "
                             "it needs rehearsal (rehearsal_ratio > 0 and rehearsal spectra)")
        logg = self.labels[:, LABEL_NAMES.index("logg")].numpy().astype(np.float64)
        if self.teacher is not None:  # an all-zero PMF (log g not distilled) decodes to NaN: unknown
            first = self.n_main + self.n_rehearsal
            logg[first:] = self.bins["logg"].decode(self.teacher["logg"][first:])["mean"]
        return torch.as_tensor(np.where(np.isfinite(logg), (logg < GIANT_LOGG).astype(np.int64), -1))

    def _append_rows(self, extra: SpectraSet, what: str, labels) -> None:
        if extra.flux.shape[1] != self.flux.shape[1]:
            raise ValueError(f"{what} spectra have {extra.flux.shape[1]} pixels, training spectra "
                             f"{self.flux.shape[1]}: put both on one instrument")
        self.flux = torch.cat([self.flux, torch.as_tensor(extra.flux, dtype=torch.float32)])
        self.ivar = torch.cat([self.ivar, torch.as_tensor(np.nan_to_num(extra.ivar, posinf=np.inf),
                                                          dtype=torch.float32)])
        self.mask = torch.cat([self.mask, torch.as_tensor(extra.mask, dtype=torch.bool)])
        self.labels = torch.cat([self.labels, torch.as_tensor(labels, dtype=torch.float32)])

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / "checkpoint.pt" if self.out_dir else None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "swa": None if self.swa is None else self.swa.state_dict(), "history": self.history,
                "config": self.config.to_dict(), "fingerprint": self.fingerprint}

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None or self.rank != 0:
            return
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        with atomic_write(self.checkpoint_path) as fh:
            fh.write(buffer.getvalue())
        self._write_metrics()

    def load_checkpoint(self) -> bool:
        """Resume from ``out_dir/checkpoint.pt`` when its fingerprint matches this run's; True when it did.

        A checkpoint written with other settings, other training data or other starting weights is
        not resumed: training starts afresh (the old checkpoint is replaced after the first epoch)
        and :attr:`resume_note` says which of the three changed.
        """
        path = self.checkpoint_path
        if path is None or not path.exists():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        saved = state.get("fingerprint")
        if saved is None:
            changed = ["no fingerprint: written by an older remap"]
        else:
            changed = [part for part in dict.fromkeys([*self.fingerprint, *saved])
                       if saved.get(part) != self.fingerprint.get(part)]
        if changed:
            self._note(f"{path}: not resumed, starting afresh ({', '.join(changed)} changed since it was written)"
                       if saved is not None else f"{path}: not resumed, starting afresh ({changed[0]})")
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.swa is not None and state["swa"] is not None:
            self.swa.load_state_dict(state["swa"])
        self.history, self.epoch = list(state["history"]), int(state["epoch"])
        self._note(f"{path}: resumed after epoch {self.epoch} (same settings, training data and starting weights)")
        return True

    def _note(self, message: str) -> None:
        self.resume_note = message
        if self.rank == 0:
            print(message, file=sys.stderr, flush=True)

    def _write_metrics(self) -> None:
        if not self.history:
            return
        keys = list(dict.fromkeys(k for row in self.history for k in row))
        with atomic_write(self.out_dir / "metrics.csv", "w") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)

    # ------------------------------------------------------------------ one epoch
    def _loss(self, out: dict, labels: torch.Tensor, sigma=None, rows=None) -> tuple[torch.Tensor, dict]:
        """The training loss of a batch; ``rows``: its row numbers (for the distillation targets)."""
        if self.regression:
            mean = torch.tensor(self.label_stats[0], device=labels.device)
            std = torch.tensor(self.label_stats[1], device=labels.device)
            z = (labels - mean) / std
            parts, total = {}, 0.0
            for j, name in enumerate(LABEL_NAMES):
                ok = torch.isfinite(z[:, j])
                err = (out["logits"][name][ok] - z[ok, j]) ** 2
                parts[name] = err.mean() if ok.any() else err.sum()
                total = total + parts[name]
            return total, {k: float(v.detach()) for k, v in {**parts, "total": total}.items()}
        sigma = self.config.label_sigma if sigma is None else sigma
        targets = _targets(labels.cpu(), self.bins, sigma)
        if self.teacher is not None and rows is not None:  # unlabelled rows have all-zero targets so far
            targets = {k: v + self.teacher[k][rows] for k, v in targets.items()}
        targets = {k: v.to(self.device) for k, v in targets.items()}
        return self.loss_fn(out["logits"], targets, out["embedding"], labels)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        """This epoch's rows: every training spectrum and fresh draws of rehearsal and distillation ones."""
        cfg = self.config
        if self.rehearsal_ratio == 0 and self.distill_ratio == 0:
            return torch.randperm(self.n_main, generator=_generator(cfg.seed, epoch, 0))
        parts = [torch.arange(self.n_main)]
        start = self.n_main
        # one random stream per pool, so adding distillation leaves the rehearsal draws as they were
        for ratio, pool, stream in ((self.rehearsal_ratio, self.n_rehearsal, 3),
                                    (self.distill_ratio, len(self.flux) - self.n_main - self.n_rehearsal, 4)):
            count = min(round(ratio * self.n_main), pool)
            if count:
                parts.append(start + torch.randperm(pool, generator=_generator(cfg.seed, epoch, stream))[:count])
            start += pool
        rows = torch.cat(parts)
        return rows[torch.randperm(len(rows), generator=_generator(cfg.seed, epoch, 0))]

    def run_epoch(self, progress: bool = True) -> dict:
        cfg, epoch = self.config, self.epoch
        order = self._epoch_order(epoch)
        n = len(order)
        augment_gen = _generator(cfg.seed, epoch, 1)
        mix_gen = _generator(cfg.seed, epoch, 5)
        torch.manual_seed(cfg.seed * 7919 + epoch)  # dropout
        steps = max(n // cfg.batch_size, 1)  # drop the ragged last batch: BN and DDP want full batches
        self.ddp_model.train()
        frozen = epoch < cfg.freeze_epochs
        if frozen:  # a frozen backbone also keeps its batch-norm statistics
            self.model.stem.eval()
            self.model.backbone.eval()
        sums: dict[str, float] = {}
        # per-step bar only on a terminal (disable=None); notebooks get the per-epoch bar of fit()
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=None if progress and self.rank == 0 else True)
        for step in bar:
            lr = learning_rate(cfg, epoch + step / steps)
            for group in self.optimizer.param_groups:
                factor = (0.0 if frozen else cfg.backbone_lr_factor) if group["name"] == "backbone" else 1.0
                group["lr"] = lr * factor
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            # every rank augments the whole global batch with the same stream, then keeps its share,
            # so the data match a single-process run exactly
            flux, ivar, mask, labels = self.flux[idx], self.ivar[idx], self.mask[idx], self.labels[idx]
            if self.node_table is not None:  # before augmentation, which then treats a mixture as any spectrum
                flux, ivar, mask, labels = mix_with_neighbours(self.flux, self.ivar, self.mask, self.labels, idx,
                                                               *self.node_table, cfg.node_mix, mix_gen)
            flux, _, mask = self.augmenter(flux, ivar, mask, generator=augment_gen)
            mine = slice(self.rank, None, self.world)
            flux, mask, labels = flux[mine].to(self.device), mask[mine].to(self.device), labels[mine]
            align = self.align_giant is not None
            out = self.ddp_model(flux, mask, return_features=align)
            sigma = None if self.row_sigma is None else self.row_sigma[idx.numpy()][mine]
            loss, parts = self._loss(out, labels.to(self.device), sigma, idx[mine])
            if align:
                rows = idx[mine]
                known = (self.align_giant[rows] >= 0).to(self.device)
                synthetic = ((rows >= self.n_main) & (rows < self.n_main + self.n_rehearsal)).to(self.device)
                mmd = class_conditional_mmd2(out["features"][known], synthetic[known],
                                             (self.align_giant[rows] == 1).to(self.device)[known])
                loss = loss + cfg.align_weight * mmd
                parts = {**parts, "align": float(mmd.detach()), "total": float(loss.detach())}
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{parts['total']:.3f}", lr=f"{lr:.1e}")
        if self.swa is not None and epoch + 1 > cfg.swa_start * cfg.epochs:
            self.swa.update_parameters(self.model)
        row = {"epoch": epoch + 1, "lr": lr, **{f"train_{k}": v / steps for k, v in sums.items()}}
        if self.world > 1:  # average the logged losses over ranks
            vals = torch.tensor([row[k] for k in row if k.startswith("train_")], dtype=torch.float64)
            dist.all_reduce(vals)
            for k, v in zip([k for k in row if k.startswith("train_")], (vals / self.world).tolist(), strict=True):
                row[k] = v
        return row

    @torch.no_grad()
    def validate(self, model=None) -> dict:
        """Loss and label scatter on the validation set at a fixed S/N of 50 (same noise every epoch)."""
        if self.val_set is None:
            return {}
        from remap_lib.evaluation.evaluate import add_noise, predict

        model = model or self.model
        flux, mask = add_noise(self.val_set.flux, self.val_set.mask, snr=50.0, seed=self.config.seed)
        pred = predict(model, flux, mask, self.bins, label_stats=self.label_stats, device=self.device)
        truth = self.val_set.labels
        row = {}
        for j, name in enumerate(LABEL_NAMES):
            err = pred[name]["median"] - truth[:, j]
            row[f"val_sigma_{name}"] = float(np.nanstd(err))
        return row

    def fit(self, progress: bool = True, resume: bool = True, stop_after: int | None = None) -> FitResult:
        """Train to ``config.epochs`` (or only to epoch ``stop_after``, for tests of resumption)."""
        start = time.perf_counter()
        if resume:
            self.load_checkpoint()
        last = self.config.epochs if stop_after is None else min(stop_after, self.config.epochs)
        bar = tqdm(total=self.config.epochs, initial=self.epoch, desc="training", unit="epoch",
                   disable=not progress or self.rank != 0)
        while self.epoch < last:
            row = self.run_epoch(progress)
            self.epoch += 1
            row.update(self.validate())
            row["seconds"] = time.perf_counter() - start
            self.history.append(row)
            self.save_checkpoint()
            bar.set_postfix({k.removeprefix("train_").removeprefix("val_"): f"{v:.3g}" for k, v in row.items()
                             if k == "train_total" or k.startswith("val_")}, refresh=False)
            bar.update()
        bar.close()
        return FitResult(self.final_model(), self.history, self.config, time.perf_counter() - start)

    def final_model(self) -> DeepREMAP:
        """The SWA average with batch-norm statistics recomputed on (augmented) training data, else the model."""
        if self.swa is None or self.epoch <= self.config.swa_start * self.config.epochs:
            return self.model
        model = copy.deepcopy(self.swa.module)
        _update_bn(model, self, self.config.seed)
        return model


#: The epoch number whose random streams the SWA batch-norm pass draws from (augmentation, and the rehearsal
#: and distillation rows of an "epoch" pass): past any run, so it repeats no training epoch's draws.
SWA_BN_EPOCH = 10_000


@torch.no_grad()
def _update_bn(model: DeepREMAP, trainer: Trainer, seed: int) -> None:
    """Recompute BatchNorm running statistics in one pass over augmented training batches."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the pass
    model.train()
    gen = _generator(seed, SWA_BN_EPOCH, 2)
    bs = trainer.config.batch_size
    if trainer.config.swa_bn_rows == "epoch":  # the statistics of the batches the weights were trained on
        rows = trainer._epoch_order(SWA_BN_EPOCH)
        order = rows[torch.randperm(len(rows), generator=gen)]
    else:  # the target domain's statistics, not the rehearsal's
        order = torch.randperm(trainer.n_main, generator=gen)
    for i in range(0, len(order), bs):
        idx = order[i:i + bs]
        flux, _, mask = trainer.augmenter(trainer.flux[idx], trainer.ivar[idx], trainer.mask[idx], generator=gen)
        model(flux.to(trainer.device), mask.to(trainer.device))
    model.eval()


def build_model(npix: int, bins=None, head: str = "classification", **arch) -> DeepREMAP:
    """A :class:`DeepREMAP` sized for ``npix`` input pixels and the given bins."""
    from remap_lib.nn.model import ModelConfig

    bins = dict(bins or DEFAULT_BINS)
    return DeepREMAP(ModelConfig(npix=npix, head_bins={k: b.nbins for k, b in bins.items()}, head=head, **arch))


def main(argv=None) -> int:
    """``python -m remap_lib.training.train`` / ``remap train`` / ``torchrun ... -m remap_lib.training.train``."""
    import argparse

    from remap_lib.data.dataset import read_dataset
    from remap_lib.nn.model import ModelConfig
    from remap_lib.nn.modelfile import save_model
    from remap_lib.training.profiles import PROFILE_NAMES, STEP_DEFAULTS, resolve

    p = argparse.ArgumentParser(prog="remap train", description="Pretrain deep-REMAP on a dataset file "
                                "(rows with meta 'split' == 'train'; 'val' rows are used for validation).")
    p.add_argument("--data", required=True, help="dataset file written by `remap prepare` / notebook 01")
    p.add_argument("--out", required=True, help="folder for checkpoint.pt, metrics.csv and model.pt")
    p.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                   help="take the unset options from this profile's pretraining step (default: the dataclass defaults)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--gamma", type=float)
    p.add_argument("--triplet-weight", type=float)
    p.add_argument("--cost-weight", type=float)
    p.add_argument("--swa-start", type=float, help="1.0 disables SWA")
    p.add_argument("--head", choices=["classification", "regression"], default="classification")
    p.add_argument("--stage-channels", help="comma-separated, e.g. 16,32,64,128")
    p.add_argument("--stem-channels", type=int, default=ModelConfig.stem_channels)
    p.add_argument("--blocks-per-stage", type=int)
    p.add_argument("--embedding-dim", type=int, default=ModelConfig.embedding_dim)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    # one source of defaults: the profile's pretraining step, itself the dataclass defaults plus differences
    step = resolve("pretrain", args.profile) if args.profile else STEP_DEFAULTS["pretrain"]()
    for key in ("epochs", "batch_size", "lr", "threads", "gamma", "triplet_weight", "cost_weight", "swa_start",
                "blocks_per_stage"):
        if getattr(args, key) is None:
            setattr(args, key, step[key])
    stage_channels = (tuple(int(c) for c in args.stage_channels.split(",")) if args.stage_channels
                      else tuple(step["stage_channels"]))

    data = read_dataset(args.data)
    split = data.meta.get("split", np.full(len(data), "train"))
    train, val = data.select(split == "train"), data.select(split == "val")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         threads=args.threads, gamma=args.gamma, triplet_weight=args.triplet_weight,
                         cost_weight=args.cost_weight, swa_start=args.swa_start,
                         augment=AugmentConfig.none() if args.no_augment else AugmentConfig())
    torch.manual_seed(args.seed)  # identical initial weights on every rank and every rerun
    model = build_model(data.flux.shape[1], head=args.head,
                        stage_channels=stage_channels,
                        stem_channels=args.stem_channels, blocks_per_stage=args.blocks_per_stage,
                        embedding_dim=args.embedding_dim)
    trainer = Trainer(model, train, config, val=val if len(val) else None, out_dir=args.out)
    if trainer.rank == 0:
        print(model.summary())
    result = trainer.fit(progress=not args.no_progress, resume=not args.fresh)
    if trainer.rank == 0:
        path = save_model(Path(args.out) / "model.pt", result.model, trainer.bins, data.instrument,
                          config.to_dict(), trainer.label_stats)
        print(f"saved {path} after {result.seconds:.0f} s")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
