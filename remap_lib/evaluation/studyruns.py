"""One run of the study: what each kind of row trains, predicts and records.

:func:`run_task` runs one task of :func:`remap_lib.evaluation.study.plan` (a row's pretraining, or one seed and
fold of a row) and writes its record; :mod:`remap_lib.evaluation.study` schedules the tasks and holds what
they read (:class:`~remap_lib.evaluation.study.Study`).
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from remap_lib.constants import LABEL_NAMES
from remap_lib.data.dataset import SpectraSet
from remap_lib.evaluation import calibrate, runqueue
from remap_lib.evaluation.degrade import with_snr
from remap_lib.evaluation.evaluate import add_noise, predict
from remap_lib.evaluation.folds import fold_ids
from remap_lib.evaluation.studyrows import DERIVED_FROM, RECIPES, ROW_BY_NAME, Row
from remap_lib.nn.binning import DEFAULT_BINS, QUANTILES
from remap_lib.nn.modelfile import load_model, package_versions, save_model, weights_sha256
from remap_lib.training.config import TrainConfig
from remap_lib.training.train import Trainer, build_model
from remap_lib.training.transfer import LITERATURE_SIGMA, ensemble_pmfs, finetune, unlabelled

if TYPE_CHECKING:
    from remap_lib.evaluation.study import Study, Task

#: Each pretraining record scores its network on the grid's held-out nodes at this S/N (issue 12's synthetic
#: goal, at notebook 2's S/N), with noise drawn from this seed: the same noise for every row and seed.
SYNTHETIC_SNR = 50.0
SYNTHETIC_NOISE_SEED = 0
#: Normal quantiles of the central 68 % and 95 % intervals, for rows whose intervals are Gaussian.
Z68, Z95 = 1.0, 1.959963984540054


def run_task(study: Study, task: Task) -> Path:
    """Run one task and write its record: config, seed, fold, versions, data hashes, device, wall time
    and, per row it yields, the per-star predictions (``test``: the held-out fold; ``giants``; a pretraining:
    ``synthetic_test``, the grid's held-out nodes)."""
    t0, cpu0, started = time.perf_counter(), time.process_time(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    scratch = study.work / "runs" / task.key
    resumed = scratch.exists()  # an interrupted attempt left checkpoints: this run's times are partial
    if task.fold is None:
        (config, nodes), extra = _pretrain(study, task.row, task.seed, scratch), {}
        predictions = {task.row.name: nodes} if nodes else {}
    else:
        config, predictions, extra = RUNNERS[task.row.kind](study, task.row, task.seed, task.fold, scratch)
    record = {"key": task.key, "row": task.row.name, "kind": task.kind, "seed": task.seed, "fold": task.fold,
              "profile": study.profile, "budget": task.row.budget, "config": config, **extra,
              "versions": package_versions(), "data": study.hashes_for(task.row),
              "device": _device_name(study.device), "host": platform.node(),
              "nice": os.nice(0), "load_average": list(os.getloadavg()), "started": started,
              "wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - cpu0, 2),
              "resumed": resumed, "predictions": predictions}
    path = runqueue.write_record(study.out, task.key, record)
    shutil.rmtree(scratch, ignore_errors=True)  # checkpoints are only for resuming this run
    return path


def _device_name(device: str) -> str:
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"{dev} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _grid_config(row: Row) -> dict:
    return {"pixel_in_lsf": True} if row.pixel_in_lsf else {}


def _pretrain(study: Study, row: Row, seed: int, scratch: Path) -> tuple[dict, dict]:
    """Pretrain ``row``'s network for ``seed``; its config, and its predictions for the grid's held-out nodes."""
    cfg = study.budgets.pretrain(row, seed)
    data = study.synthetic_train(row)
    torch.manual_seed(seed)
    model = build_model(data.flux.shape[1], DEFAULT_BINS, **study.budgets.arch_for(row))
    trainer = Trainer(model, data, cfg, DEFAULT_BINS, out_dir=scratch, device=study.device)
    result = trainer.fit(progress=study.progress)
    network = result.model.cpu().eval()
    save_model(study.pretrained_path(row, seed), network, DEFAULT_BINS, data.instrument, cfg.to_dict(),
               trainer.label_stats)
    # the weights' hash, so that a rerun can be checked to give the same network
    config = {"pretrain": cfg.to_dict(), "arch": study.budgets.arch_for(row), **_grid_config(row),
              "weights_sha256": weights_sha256(network.state_dict())}
    return config, held_out_node_predictions(network, study.synthetic_for(row))


def held_out_node_predictions(model, synthetic: SpectraSet) -> dict:
    """``{"synthetic_test": part}``: ``model`` on the grid's held-out (``test``) nodes at :data:`SYNTHETIC_SNR`,
    the same noise for every row and seed (T = 1); empty when the grid has no test nodes."""
    split = np.asarray(synthetic.meta.get("split", np.full(len(synthetic), "train")))
    nodes = synthetic.select(split == "test")
    if not len(nodes):
        return {}
    flux, mask = add_noise(nodes.flux, nodes.mask, SYNTHETIC_SNR, SYNTHETIC_NOISE_SEED)
    pmfs = ensemble_pmfs([model], flux, mask)
    return {"synthetic_test": _as_record(nodes, {n: DEFAULT_BINS[n].decode(pmfs[n]) for n in LABEL_NAMES})}


def _train_members(study: Study, row: Row, start: Path | None, sets, cfg: TrainConfig, members: int,
                   scratch: Path) -> list:
    """``members`` networks trained on the fold's fine-tuning stars (from ``start``, or from scratch)."""
    models = []
    for k in range(members):
        member_cfg = replace(cfg, seed=cfg.seed + k)
        out_dir = scratch / f"member_{k}"
        if start is None:
            torch.manual_seed(member_cfg.seed)
            model = build_model(sets["finetune"].flux.shape[1], DEFAULT_BINS, **study.budgets.arch_for(row))
            trainer = Trainer(model, sets["finetune"], member_cfg, DEFAULT_BINS, val=sets["temperature"],
                              out_dir=out_dir, device=study.device)
            result = trainer.fit(progress=study.progress)
        else:
            rehearse = study.synthetic_train(row) if row.rehearsal else None
            # the giants' targets are the start network's PMFs; their labels are blanked, never read
            distill = unlabelled(sets.get("distill", sets["giants"])) if row.distill else None
            result, trainer = finetune(start, sets["finetune"], sets["temperature"], member_cfg, out_dir,
                                       study.progress, study.device, rehearse, row.rehearsal, distill, row.distill,
                                       row.distill_labels)
        models.append((result.model.cpu().eval(), trainer.label_stats))
    return models


def _temperatures(models, data: SpectraSet) -> list[dict]:
    return [calibrate.fit_temperatures(calibrate.collect_logits(m, data.flux, data.mask), data.labels,
                                       DEFAULT_BINS, label_sigma=LITERATURE_SIGMA) for m in models]


def _coverage_temperatures(models, data: SpectraSet) -> dict:
    """One temperature per head, shared by the members, fitted to the interval coverage (issue 12)."""
    logits = [calibrate.collect_logits(m, data.flux, data.mask) for m in models]
    return calibrate.fit_coverage_temperatures(logits, data.labels, DEFAULT_BINS)


def _pmf_predictions(models, temps, sets) -> dict:
    out = {}
    for part in ("test", "giants"):
        pmfs = ensemble_pmfs(models, sets[part].flux, sets[part].mask, temps)
        out[part] = _as_record(sets[part], {n: DEFAULT_BINS[n].decode(pmfs[n]) for n in LABEL_NAMES})
    return out


def _run_ensemble(study: Study, row: Row, seed: int, fold: int, scratch: Path):
    """deep-REMAP, its reduced-budget rows and no-pretraining: members, temperatures, PMF ensemble."""
    sets = study.fold_sets(fold, row.giants_held_out)
    cfg = study.budgets.finetune(row, seed)
    if row.kind == "ensemble":
        start = study.start_network("deep-remap")
    else:
        start = None if row.kind == "scratch" else study.pretrained_path(row, seed)
    trained = _train_members(study, row, start, sets, cfg, study.budgets.members(row), scratch)
    models = [m for m, _ in trained]
    temps = _temperatures(models, sets["temperature"])
    predictions = {row.name: _pmf_predictions(models, temps, sets)}
    extra = {"members": len(models), "temperatures": temps, "n_finetune": len(sets["finetune"]),
             "n_temperature": len(sets["temperature"]),
             **({"n_distill": len(sets["distill"]), "n_giants_scored": len(sets["giants"])} if "distill" in sets
                else {}),
             **({"distill_labels": list(row.distill_labels)} if row.distill else {})}
    predictions |= _derived_predictions(row, models, temps, sets, start, extra)
    return {"finetune": cfg.to_dict(), **({"arch": study.budgets.arch_for(row)} if row.budget == "reduced" else {}),
            **_grid_config(row)}, predictions, extra


def _derived_predictions(row: Row, models, temps, sets, start: Path | None, extra: dict) -> dict:
    """The predictions of the derived rows that ``row``'s runs yield (:data:`DERIVED_FROM`), from its networks."""
    out = {}
    for name in DERIVED_FROM.get(row.name, ()):
        derived = ROW_BY_NAME[name]
        if derived.recipe == "degraded":  # the same networks on noisier copies of the same stars
            noisy = {**sets, **{part: with_snr(sets[part], derived.snr) for part in ("test", "giants")}}
            out[name] = _pmf_predictions(models, temps, noisy)
        elif derived.recipe == "no temperatures":
            out[name] = _pmf_predictions(models, None, sets)
        elif derived.recipe == "first member":
            out[name] = _pmf_predictions(models[:1], temps[:1], sets)
        elif derived.recipe == "pretrained network":
            pre, _ = load_model(start)
            pre_temps = _temperatures([pre], sets["temperature"])
            out[name] = _pmf_predictions([pre], pre_temps, sets)
            extra["pretrained_only_temperatures"] = pre_temps[0]
        elif derived.recipe == "coverage temperatures":
            shared = _coverage_temperatures(models, sets["temperature"])
            out[name] = _pmf_predictions(models, [shared] * len(models), sets)
            extra["coverage_temperatures"] = shared
        else:
            raise ValueError(f"derived row {name!r}: unknown recipe {derived.recipe!r}; known: {RECIPES}")
    return out


def _gaussian(values: np.ndarray, sigma: np.ndarray) -> dict:
    """Estimates with central 68/95 % intervals of a normal of width ``sigma`` (n, 3) per label."""
    out = {}
    for j, name in enumerate(LABEL_NAMES):
        v, s = values[:, j], sigma[:, j]
        out[name] = {"median": v, "p16": v - Z68 * s, "p84": v + Z68 * s, "p2_5": v - Z95 * s, "p97_5": v + Z95 * s}
    return out


def _run_mse(study: Study, row: Row, seed: int, fold: int, scratch: Path):
    """The MSE twin's members, averaged; interval width = rms residual on the fold's temperature stars."""
    sets = study.fold_sets(fold)
    cfg = study.budgets.finetune(row, seed)
    trained = _train_members(study, row, study.start_network("mse"), sets, cfg, study.budgets.members(row), scratch)

    def values(data):
        preds = [predict(m, data.flux, data.mask, DEFAULT_BINS, label_stats=stats) for m, stats in trained]
        return np.mean([np.column_stack([p[n]["median"] for n in LABEL_NAMES]) for p in preds], axis=0)

    resid = values(sets["temperature"]) - sets["temperature"].labels
    rms = np.sqrt(np.nanmean(resid ** 2, axis=0))
    predictions = {part: _as_record(sets[part], _gaussian(v, np.broadcast_to(rms, v.shape)))
                   for part in ("test", "giants") for v in [values(sets[part])]}
    extra = {"members": len(trained), "interval_sigma": rms.tolist()}
    return {"finetune": cfg.to_dict()}, {row.name: predictions}, extra


def _run_cannon(study: Study, row: Row, seed: int, fold: int, scratch: Path):
    from remap_lib.evaluation.baselines import CannonBaseline

    sets = study.fold_sets(fold)
    train = study.stars(fold_ids(study.folds, fold, "finetune") + fold_ids(study.folds, fold, "temperature"))
    cannon = CannonBaseline(progress=study.progress).fit(train.flux, train.ivar, train.labels)
    predictions = {}
    for part in ("test", "giants"):
        values, sigma = cannon.predict(sets[part].flux, sets[part].ivar, return_sigma=True)
        predictions[part] = _as_record(sets[part], _gaussian(values, sigma))
    return {"cannon": {"order": cannon.order}}, {row.name: predictions}, {"n_train": len(train)}


def _run_chi2(study: Study, row: Row, seed: int, fold: int, scratch: Path):
    from remap_lib.evaluation.baselines import Chi2GridFit

    sets = study.fold_sets(fold)
    grid = study.synthetic
    fit = Chi2GridFit(progress=study.progress).fit(grid.flux, np.where(grid.mask, 0.0, 1.0), grid.labels)
    parts = ("test", "giants") if fold == 0 else ("test",)  # the fit does not depend on the fold
    predictions = {}
    for part in parts:
        values, sigma = fit.predict(sets[part].flux, sets[part].ivar, return_sigma=True)
        predictions[part] = _as_record(sets[part], _gaussian(values, sigma))
    return {"chi2": {"continuum_degree": fit.continuum_degree, "refine": fit.refine, "grid_nodes": len(grid)}}, \
        {row.name: predictions}, {}


RUNNERS = {"ensemble": _run_ensemble, "reduced": _run_ensemble, "scratch": _run_ensemble, "mse": _run_mse,
           "cannon": _run_cannon, "chi2": _run_chi2}

#: Decimals kept in the records per label: far below any method's precision (0.1 K, 1e-4 dex).
DECIMALS = {"teff": 1, "logg": 4, "feh": 4}


def _as_record(data: SpectraSet, pred: dict) -> dict:
    """Per-star ids, literature labels and each label's median and interval ends, rounded (NaN -> null);
    the PMF's mean as well where the prediction has one (the ``PMF mean`` row reads it)."""
    def col(values, name):
        return [None if not np.isfinite(v) else round(float(v), DECIMALS[name]) for v in np.asarray(values)]

    out = {"id": [str(i) for i in data.ids],
           "truth": {n: col(data.labels[:, j], n) for j, n in enumerate(LABEL_NAMES)}}
    for name in LABEL_NAMES:
        out[name] = {q: col(pred[name][q], name) for q in (*QUANTILES, *(["mean"] if "mean" in pred[name] else []))}
    return out
