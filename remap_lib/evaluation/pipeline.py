"""The method's steps after pretraining as plain functions, for ``remap finetune / calibrate / validate / export``.

The notebooks show each step with figures; these functions are what the command line runs, so the
whole method works without Jupyter::

    remap prepare --profile default                              # work/default/{synthetic,miles}.h5
    remap train --data work/default/synthetic.h5 --out work/default/pretrain
    remap finetune --pretrained work/default/pretrain/model.pt   # work/default/finetune/member_k.pt
    remap calibrate                                              # member_k_calibrated.pt
    remap validate                                               # scatter, bias, coverage per role
    remap export -o my_model.pt                                  # one file for `remap predict --model`
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from remap_lib.constants import GIANT_LOGG, LABEL_NAMES
from remap_lib.data.dataset import SpectraSet, read_dataset
from remap_lib.data.splits import DEFAULT_SPLITS, read_splits
from remap_lib.evaluation import calibrate as cal
from remap_lib.evaluation.evaluate import giant_dwarf_split, interval_coverage, scatter_metrics
from remap_lib.fileio import RemapDataError, write_json
from remap_lib.nn.modelfile import load_model, save_ensemble, save_model
from remap_lib.training.profiles import CALIBRATION_METHODS, resolve
from remap_lib.training.transfer import (
    LITERATURE_SIGMA,
    by_role,
    ensemble_pmfs,
    finetune_ensemble,
    load_ensemble,
    profile_finetune_config,
    summarize,
    unlabelled,
)


def _roles(miles_file, splits_file) -> dict[str, SpectraSet]:
    return by_role(read_dataset(miles_file), read_splits(splits_file or DEFAULT_SPLITS))


def member_files(folder, calibrated: bool) -> list[Path]:
    """``member_k.pt`` (or ``member_k_calibrated.pt``) in ``folder``, in k order; error if none."""
    pattern = "member_[0-9]*_calibrated.pt" if calibrated else "member_[0-9]*.pt"
    files = sorted((p for p in Path(folder).glob(pattern) if calibrated or "_calibrated" not in p.name),
                   key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        step = "remap calibrate" if calibrated else "remap finetune"
        raise FileNotFoundError(f"{folder}: no {pattern} files; run `{step}` first")
    return files


def finetune(pretrained, miles_file, out_dir, profile: str = "default", splits_file=None, seed: int = 0,
             progress: bool = True, synthetic_file=None, **overrides) -> list[Path]:
    """Fine-tune ``pretrained`` on the splits' fine-tuning stars as notebook 03 does (resumable).

    With a ``rehearsal`` ratio above 0, the training spectra of ``synthetic_file`` (default:
    ``synthetic.h5`` beside ``miles_file``) are mixed into every epoch; with ``distill`` above 0, the
    giant candidates' spectra, without their labels, taught the pretrained network's own PMFs for the
    labels in ``distill_labels``.
    """
    p = resolve("finetune", profile, **overrides)
    sets = _roles(miles_file, splits_file)
    config = profile_finetune_config(p, seed)
    rehearsal = rehearsal_set(synthetic_file or Path(miles_file).with_name("synthetic.h5")) if p["rehearsal"] else None
    distill = unlabelled(sets["giant_candidate"]) if p["distill"] and "giant_candidate" in sets else None
    return finetune_ensemble(pretrained, sets["finetune"], sets.get("validation"), config, out_dir,
                             members=p["members"], progress=progress, rehearsal=rehearsal,
                             rehearsal_ratio=p["rehearsal"], distill=distill, distill_ratio=p["distill"],
                             distill_labels=tuple(p["distill_labels"]))


def rehearsal_set(synthetic_file) -> SpectraSet:
    """The synthetic training spectra (split 'train') that fine-tuning rehearses."""
    if not Path(synthetic_file).exists():
        raise RemapDataError(synthetic_file, "fine-tuning rehearses the synthetic training spectra, and this file "
                                             "does not exist: run `remap prepare` (notebook 01) to write it, "
                                             "or fine-tune without rehearsal (`--rehearsal 0`)")
    synth = read_dataset(synthetic_file)
    return synth.select(synth.meta.get("split", np.full(len(synth), "train")) == "train")


def calibrate(members, miles_file, splits_file=None, method: str = "nll") -> tuple[list[Path], list[dict]]:
    """Fit per-head temperatures on the validation stars (as notebook 04).

    ``method``: ``"nll"`` fits each member's temperatures by the cross-entropy of soft literature
    targets (Guo et al.); ``"coverage"`` fits one temperature per head, shared by the members, so
    that the ensemble's central intervals cover the literature labels at their nominal rate
    (:func:`remap_lib.evaluation.calibrate.fit_coverage_temperatures`). Writes ``member_k_calibrated.pt``
    beside each member and ``temperatures.json``; returns the new files and the temperatures.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {CALIBRATION_METHODS}")
    sets = _roles(miles_file, splits_file)
    val = sets["validation"]
    loaded = [load_model(path) for path in members]
    logits = [cal.collect_logits(model, val.flux, val.mask) for model, _ in loaded]
    if method == "coverage":
        shared = cal.fit_coverage_temperatures(logits, val.labels, loaded[0][1]["bins"])
        fitted = [dict(shared) for _ in loaded]
    else:
        fitted = [cal.fit_temperatures(z, val.labels, info["bins"], label_sigma=LITERATURE_SIGMA)
                  for z, (_, info) in zip(logits, loaded, strict=True)]
    out, temps = [], []
    for path, (model, info), t in zip(members, loaded, fitted, strict=True):
        out.append(save_model(Path(path).with_name(Path(path).stem + "_calibrated.pt"), model, info["bins"],
                              info["instrument"], info["train_config"], info["label_stats"],
                              extra={**info["extra"], "temperatures": t, "calibration": method}))
        temps.append(t)
    write_json(Path(members[0]).parent / "temperatures.json", temps)
    return out, temps


def ensemble_predictions(models, temperatures, data: SpectraSet, bins) -> dict:
    """The ensemble's decoded estimates and PMFs per label on ``data``
    (:func:`~remap_lib.training.transfer.summarize` of the members' tempered mean PMF)."""
    return summarize(ensemble_pmfs(models, data.flux, data.mask, temperatures), bins)


def role_predictions(models, temperatures, sets: dict[str, SpectraSet], bins,
                     roles=("calibration", "validation", "giant_candidate")) -> dict[str, dict]:
    """:func:`ensemble_predictions` for each of ``roles`` that ``sets`` has, in ``roles`` order."""
    return {role: ensemble_predictions(models, temperatures, sets[role], bins) for role in roles if role in sets}


def giant_dwarf_by_role(predictions: dict[str, dict], sets: dict[str, SpectraSet], bins,
                        logg_boundary: float = GIANT_LOGG) -> dict[str, dict]:
    """:func:`~remap_lib.evaluation.evaluate.giant_dwarf_split` of each role's predictions, without
    its per-star arrays (``called_giant``, ``p_giant``): star counts, fractions, accuracy, scatter."""
    out = {}
    for role, pred in predictions.items():
        split = giant_dwarf_split(pred, sets[role].labels, bins, logg_boundary)
        out[role] = {k: v for k, v in split.items() if k not in ("called_giant", "p_giant")}
    return out


def validate(members, miles_file, splits_file=None, roles=("calibration", "validation", "giant_candidate")) -> dict:
    """Bias, σ, MAD, 68/95 % coverage and interval ECE per role and label for an ensemble."""
    models, temps, info = load_ensemble(members)
    sets = _roles(miles_file, splits_file)
    report = {}
    for role, pred in role_predictions(models, temps, sets, info["bins"], roles).items():
        data, pmfs = sets[role], {n: pred[n]["pmf"] for n in LABEL_NAMES}
        stats = scatter_metrics(pred, data.labels)
        cover = interval_coverage(pred, data.labels)
        for j, n in enumerate(LABEL_NAMES):
            stats[n].update({"coverage_68": cover[n]["68"], "coverage_95": cover[n]["95"],
                             "ece_interval": cal.interval_ece(pmfs[n], data.labels[:, j], info["bins"][n])})
        entry = {"n": len(data), **stats}
        if role == "giant_candidate":
            split = giant_dwarf_split(pred, data.labels, info["bins"])
            entry["fraction_called_giant"] = split["fraction_called_giant"]
        report[role] = entry
    return report


def report_table(report: dict) -> pd.DataFrame:
    """One row per (role, label) from :func:`validate`."""
    rows = [{"role": role, "label": n, **{k: v for k, v in entry[n].items()}}
            for role, entry in report.items() for n in LABEL_NAMES]
    return pd.DataFrame(rows)


@torch.no_grad()
def reference_embeddings(model, datasets, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Unit embeddings, labels and ids of ``datasets`` through ``model`` (eval mode)."""
    from remap_lib.evaluation.retrieval import embed

    emb, labels, ids = [], [], []
    for data in datasets:
        emb.append(embed(model, data.flux, data.mask, batch_size=batch_size))
        labels.append(data.labels)
        ids += [str(i) for i in data.ids]
    return np.concatenate(emb).astype(np.float32), np.concatenate(labels), ids


def export(members, miles_file, out, splits_file=None, synthetic_file=None, quantile: float = 0.99) -> Path:
    """Bundle calibrated members into one model file with an out-of-domain reference.

    The reference is member 0's embedding of every spectrum the ensemble learnt from: the
    fine-tuning stars and (if ``synthetic_file`` is given) the synthetic training spectra. The
    threshold is the ``quantile`` of the nearest-reference distances of the stars it never saw
    (validation and calibration dwarfs): an input farther than that from every training spectrum
    is flagged ``out_of_domain``.
    """
    sets = _roles(miles_file, splits_file)
    model, _ = load_model(members[0])
    train_sets = [sets["finetune"]]
    if synthetic_file is not None:
        synth = read_dataset(synthetic_file)
        split = synth.meta.get("split", np.full(len(synth), "train"))
        train_sets.append(synth.select(split == "train"))
    ref, labels, ids = reference_embeddings(model, train_sets)
    unseen = [sets[r] for r in ("validation", "calibration") if r in sets and len(sets[r])]
    if not unseen:
        raise RemapDataError(miles_file, "no validation or calibration stars to set the out-of-domain threshold")
    held, _, _ = reference_embeddings(model, unseen)
    from remap_lib.evaluation.retrieval import nearest_reference_distance

    nearest = nearest_reference_distance(held, ref)
    threshold = float(np.quantile(nearest, quantile))
    reference = {"embedding": torch.as_tensor(ref), "labels": torch.as_tensor(labels), "ids": ids,
                 "threshold": threshold, "threshold_rule": f"{quantile:g} quantile of the nearest-reference distance "
                 f"of {len(held)} validation and calibration stars"}
    return save_ensemble(out, members, reference=reference,
                         extra={"miles_file": Path(miles_file).name, "splits": str(splits_file or DEFAULT_SPLITS)})

