"""The study's numbers: per-row metrics over seeds, bootstrap intervals over stars, paired differences.

Per row and table (``cv_dwarfs``, ``calibration_stars``, ``giants``; see :mod:`remap_lib.evaluation.study`):

* the metrics per label: σ, bias and MAD of (median − literature) as
  :func:`remap_lib.evaluation.evaluate.scatter_metrics` defines them, and the fraction of literature values inside
  the 68 % (p16–p84) and 95 % (p2.5–p97.5) intervals (stars without a finite interval are left out);
  ``accuracy``, the share of stars whose giant (median log g below 3.5) or dwarf call agrees with the
  literature: for the giants the share called giant, for the dwarfs the share that stay dwarfs;
* per seed the metric of that seed's prediction of every star (the giants are predicted once per
  fold, and a seed's giant metric is the mean over its folds' predictions); reported as the mean
  over seeds with its standard deviation (``*_std``, ddof 1);
* ``ci95``: a percentile bootstrap over stars of that seed mean: the same resampled stars for every
  seed and every row. A paired difference (row − its reference, on the same folds, stars and seeds)
  takes its interval from the same star resamples, each combined with a resample of the paired
  seeds (when there are two or more), so that seed-to-seed scatter counts as well. An effect is
  listed in ``effects`` only where the difference's interval excludes zero. ``comparisons`` holds the same
  for the pairs of :data:`~remap_lib.evaluation.studyrows.COMPARISONS` (remap's recipe against its
  peers; the two larger networks against each other), which are not each other's reference;
* ``ci95_models`` (tables where a seed has several models: the giants, predicted by every fold's
  model): a bootstrap that also resamples, within each resampled seed, its models, which were
  fine-tuned on different dwarfs, so the interval holds what another training set changes. For the
  dwarfs each star has one model, so resampling stars already spans the training sets. Rows whose
  seeds are pretraining seeds resample pretrained networks here too; the others hold theirs fixed.

Only complete seeds (every fold's run recorded) count, so a partly run matrix aggregates too.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from remap_lib.constants import GIANT_LOGG, LABEL_NAMES
from remap_lib.fileio import atomic_write
from remap_lib.nn.binning import QUANTILES

TABLES = ("cv_dwarfs", "calibration_stars", "giants")
METRICS = ("sigma", "bias", "mad", "coverage68", "coverage95")
QUANTITY = tuple(QUANTILES)  # median, p16, p84, p2_5, p97_5: the last axis of a prediction array
UNITS = {"teff": "K", "logg": "dex", "feh": "dex"}


# -------------------------------------------------------------------------------------------- metrics
def label_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of predictions ``pred`` (..., n, 3, 5) against ``truth`` (n, 3); each (..., 3).

    Stars whose median or truth is NaN are skipped, as in scatter_metrics; coverage counts the stars
    with a finite interval. ``accuracy`` (..., ) is the fraction of stars with a finite median log g
    whose call giant (log g < 3.5) or dwarf agrees with the literature.
    """
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.broadcast_to(np.asarray(truth, dtype=np.float64), pred.shape[:-1])
    err = pred[..., QUANTITY.index("median")] - truth
    with np.errstate(invalid="ignore"), _quiet_nan():
        med = np.nanmedian(err, axis=-2, keepdims=True)
        out = {"sigma": np.nanstd(err, axis=-2), "bias": np.nanmean(err, axis=-2),
               "mad": np.nanmedian(np.abs(err - med), axis=-2)}
        for level, (lo, hi) in {"coverage68": ("p16", "p84"), "coverage95": ("p2_5", "p97_5")}.items():
            low, high = pred[..., QUANTITY.index(lo)], pred[..., QUANTITY.index(hi)]
            usable = np.isfinite(low) & np.isfinite(high) & np.isfinite(truth)
            inside = np.where(usable, (truth >= low) & (truth <= high), np.nan)
            out[level] = np.nanmean(inside, axis=-2)
        j = LABEL_NAMES.index("logg")
        called, t = pred[..., j, QUANTITY.index("median")], truth[..., j]
        usable = np.isfinite(called) & np.isfinite(t)
        out["accuracy"] = np.nanmean(np.where(usable, (called < GIANT_LOGG) == (t < GIANT_LOGG), np.nan), axis=-1)
    return out


class _quiet_nan:
    """Silence numpy's 'mean of empty slice' warnings: an all-NaN column is a NaN metric, on purpose."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def replicate_metrics(replicates: list[np.ndarray], truth: np.ndarray, idx: np.ndarray | None = None) -> list[dict]:
    """The metrics of each replicate prediction (n, 3, 5) of one seed (for the giants: one per fold model).

    With bootstrap indices ``idx`` (B, n) every metric gains a leading axis of length B.
    """
    return [label_metrics(r if idx is None else r[idx], truth if idx is None else truth[idx]) for r in replicates]


def _replicate_mean(parts: list[dict]) -> dict:
    """One seed's metrics: the mean over its replicates' metrics (:func:`replicate_metrics`)."""
    return {m: np.mean([p[m] for p in parts], axis=0) for m in parts[0]}


def models_bootstrap(per_seed: dict[int, list[dict]], rng: np.random.Generator) -> dict | None:
    """Bootstrap samples (B, ...) of the row's metric that resample seeds, each seed's models and stars.

    ``per_seed``: seed -> the bootstrap metrics (each (B, ...), from the same star resamples) of each
    of its replicate models (the giants' fold models, fine-tuned on different dwarfs). Each sample
    draws the seeds with replacement, within each drawn seed its models with replacement, and
    averages them on that sample's stars, so the interval holds what another training set would
    change as well as another seed and other stars. None when no seed has two models.
    """
    seeds = sorted(per_seed)
    n_models = {len(per_seed[s]) for s in seeds}
    if not seeds or max(n_models) < 2 or len(n_models) > 1:
        return None
    n_seeds, k = len(seeds), n_models.pop()
    out = {}
    for m in per_seed[seeds[0]][0]:
        stacked = np.stack([np.stack([p[m] for p in per_seed[s]]) for s in seeds])  # (S, K, B, ...)
        n_boot = stacked.shape[2]
        seed_draw = rng.integers(0, n_seeds, size=(n_boot, n_seeds, 1))
        model_draw = rng.integers(0, k, size=(n_boot, n_seeds, k))
        out[m] = stacked[seed_draw, model_draw, np.arange(n_boot)[:, None, None]].mean(axis=(1, 2))
    return out


# -------------------------------------------------------------------------------------------- records
def load_records(out) -> list[dict]:
    """Every run record under ``out/runs`` (pretraining records hold no predictions)."""
    return [json.loads(p.read_text()) for p in sorted((Path(out) / "runs").rglob("*.json"))]


def _part_array(part: dict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """ids, truth (n, 3) and predictions (n, 3, 5) of one record part; null -> NaN."""
    def arr(values):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    truth = np.column_stack([arr(part["truth"][n]) for n in LABEL_NAMES])
    pred = np.stack([np.column_stack([arr(part[n][q]) for q in QUANTITY]) for n in LABEL_NAMES], axis=1)
    return part["id"], truth, pred


def collect(records: list[dict]) -> dict[str, dict]:
    """Row name -> its records' metadata and, per seed and part ('test', 'giants'), fold -> record part."""
    rows: dict[str, dict] = {}
    for rec in records:
        for name, parts in rec["predictions"].items():
            entry = rows.setdefault(name, {"records": [], "seeds": defaultdict(lambda: {"test": {}, "giants": {}})})
            entry["records"].append({k: v for k, v in rec.items() if k != "predictions"})
            for part, value in parts.items():
                entry["seeds"][rec["seed"]][part][rec["fold"]] = value
    return rows


def _as_part(ids: list[str], truth: np.ndarray, pred: np.ndarray) -> dict:
    """The record part (:func:`_part_array`'s inverse) of ``ids``, ``truth`` (n, 3), ``pred`` (n, 3, 5)."""
    def col(values):
        return [None if not np.isfinite(v) else float(v) for v in values]

    return {"id": list(ids), "truth": {n: col(truth[:, j]) for j, n in enumerate(LABEL_NAMES)},
            **{n: {q: col(pred[:, j, k]) for k, q in enumerate(QUANTITY)} for j, n in enumerate(LABEL_NAMES)}}


def conformal_entry(entry: dict, k: int) -> dict:
    """A row's entry with cross-fold conformal intervals (:mod:`remap_lib.evaluation.conformal`), per complete seed.

    Fold f's held-out dwarfs and its giants get the factors fitted on the other folds' held-out
    dwarfs; the medians are the row's own. ``factors``: seed -> fold -> level -> (3,) factors.
    """
    from remap_lib.evaluation.conformal import cross_fold_predictions

    out = {"records": entry["records"], "seeds": defaultdict(lambda: {"test": {}, "giants": {}}), "factors": {}}
    for seed, parts in sorted(entry["seeds"].items()):
        if set(parts["test"]) != set(range(k)):
            continue
        folds = sorted(parts["test"])
        arrays = [_part_array(parts["test"][f]) for f in folds]
        fold_of = np.concatenate([np.full(len(ids), f) for f, (ids, _, _) in zip(folds, arrays, strict=True)])
        truth = np.concatenate([t for _, t, _ in arrays])
        pred = np.concatenate([p for _, _, p in arrays])
        giants = {f: _part_array(part) for f, part in parts["giants"].items()}
        scaled, giants_scaled, factors = cross_fold_predictions(fold_of, pred, truth,
                                                                {f: g[2] for f, g in giants.items()})
        for f, (ids, t, _) in zip(folds, arrays, strict=True):
            out["seeds"][seed]["test"][f] = _as_part(ids, t, scaled[fold_of == f])
        for f, (ids, t, _) in giants.items():
            out["seeds"][seed]["giants"][f] = _as_part(ids, t, giants_scaled[f])
        out["factors"][seed] = factors
    return out


def mean_entry(entry: dict) -> dict:
    """A row's entry with each PMF's mean as the estimate in place of the median (intervals as they are),
    for the seeds whose every record part holds the mean (runs recorded before the mean was are left out)."""
    out = {"records": entry["records"], "seeds": defaultdict(lambda: {"test": {}, "giants": {}})}
    for seed, parts in sorted(entry["seeds"].items()):
        every = [part for by_fold in parts.values() for part in by_fold.values()]
        if not every or not all("mean" in part[n] for part in every for n in LABEL_NAMES):
            continue
        for kind, by_fold in parts.items():
            for fold, part in by_fold.items():
                out["seeds"][seed][kind][fold] = {**part, **{n: {**part[n], "median": part[n]["mean"]}
                                                             for n in LABEL_NAMES}}
    return out


def _mean_factors(factors: dict) -> dict:
    """Per level and label, the mean and range of the conformal factors over seeds and folds."""
    out = {}
    for level in ("68", "95"):
        stacked = np.array([f[level] for per_fold in factors.values() for f in per_fold.values()])
        out[level] = {n: {"mean": _number(stacked[:, j].mean()), "min": _number(stacked[:, j].min()),
                          "max": _number(stacked[:, j].max())} for j, n in enumerate(LABEL_NAMES)}
    return out


def _aligned(parts: list[dict], ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Truth (n, 3) and predictions (n, 3, 5) of ``ids`` gathered from record parts (NaN where absent)."""
    where = {i: n for n, i in enumerate(ids)}
    truth = np.full((len(ids), 3), np.nan)
    pred = np.full((len(ids), 3, len(QUANTITY)), np.nan)
    for part in parts:
        got, t, p = _part_array(part)
        rows = [where[i] for i in got]
        truth[rows], pred[rows] = t, p
    return truth, pred


def row_tables(entry: dict, folds: pd.DataFrame, giant_ids: list[str]) -> dict[str, dict]:
    """Per table: ``ids``, ``truth`` and per complete seed the list of replicate predictions."""
    k = int(folds["fold"].max()) + 1
    dwarfs = folds["id"].tolist()
    calibration = (folds["role"] == "calibration").to_numpy()
    out = {t: {"seeds": {}} for t in TABLES}
    out["cv_dwarfs"]["ids"], out["calibration_stars"]["ids"] = dwarfs, [i for i, c in zip(dwarfs, calibration,
                                                                                          strict=True) if c]
    out["giants"]["ids"] = giant_ids
    for seed, parts in sorted(entry["seeds"].items()):
        if set(parts["test"]) != set(range(k)):
            continue  # an incomplete seed would score fewer stars
        truth, pred = _aligned(list(parts["test"].values()), dwarfs)
        out["cv_dwarfs"]["seeds"][seed], out["cv_dwarfs"]["truth"] = [pred], truth
        out["calibration_stars"]["seeds"][seed] = [pred[calibration]]
        out["calibration_stars"]["truth"] = truth[calibration]
        if parts["giants"]:
            id_sets = [set(part["id"]) for part in parts["giants"].values()]
            if len(id_sets) > 1 and sum(map(len, id_sets)) == len(set().union(*id_sets)):
                # each fold scored its own giants (a held-out row): one prediction per giant, as for the dwarfs
                truth, pred = _aligned(list(parts["giants"].values()), giant_ids)
                out["giants"]["seeds"][seed], out["giants"]["truth"] = [pred], truth
            else:  # every fold's model scored every giant: one replicate per fold
                giants = [_aligned([parts["giants"][f]], giant_ids) for f in sorted(parts["giants"])]
                out["giants"]["seeds"][seed], out["giants"]["truth"] = [p for _, p in giants], giants[0][0]
    return out


# -------------------------------------------------------------------------------------------- aggregate
def _interval(samples: np.ndarray) -> list[float | None]:
    with _quiet_nan():
        return [_number(v) for v in np.nanpercentile(samples, [2.5, 97.5], axis=0)]


def _number(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _summary(point: dict, boot: dict, seeds: list[int], metrics) -> dict:
    """Mean over ``seeds``, std over seeds and the bootstrap interval of the seed mean, per metric."""
    out: dict = {}
    for m in metrics:
        per_seed = np.array([point[s][m] for s in seeds])  # (S, 3) or (S,)
        mean, ci = per_seed.mean(axis=0), np.mean([boot[s][m] for s in seeds], axis=0)  # ci: (B, ...)
        std = per_seed.std(axis=0, ddof=1) if len(seeds) > 1 else np.zeros_like(mean)
        if m == "accuracy":
            out.update({m: _number(mean), f"{m}_std": _number(std), f"{m}_ci95": _interval(ci)})
            continue
        for j, name in enumerate(LABEL_NAMES):
            label = out.setdefault(name, {})
            label.update({m: _number(mean[j]), f"{m}_std": _number(std[j])})
            label["ci95" if m == "sigma" else f"{m}_ci95"] = _interval(ci[:, j])
    return out


def _models_intervals(samples: dict, metrics) -> dict:
    """The 95 % interval of each metric from :func:`models_bootstrap` samples: accuracy, and per label each metric."""
    out: dict = {"accuracy": _interval(samples["accuracy"])} if "accuracy" in metrics else {}
    for j, name in enumerate(LABEL_NAMES):
        out[name] = {m: _interval(samples[m][:, j]) for m in metrics if m != "accuracy"}
    return out


def _difference(a: tuple, b: tuple, metrics, boot_seed: int = 0) -> dict:
    """Row ``a`` − reference ``b`` (each (point, boot, seeds)), paired on their common seeds when both have seeds.

    The interval resamples stars (the same resamples for both rows) and, when at least two seeds are
    paired, the seeds as well (a two-level bootstrap), so seed-to-seed scatter widens it too.
    """
    (pa, ba, sa), (pb, bb, sb) = a, b
    common = sorted(set(sa) & set(sb))
    paired = len(common) > 0 and len(sa) > 1 and len(sb) > 1
    sa, sb = (common, common) if paired else (sa, sb)
    out: dict = {"seeds": common if paired else None, "interval_resamples_seeds": paired and len(common) > 1}
    for m in metrics:
        diff = np.mean([pa[s][m] for s in sa], axis=0) - np.mean([pb[s][m] for s in sb], axis=0)
        if out["interval_resamples_seeds"]:
            per_seed = np.stack([ba[s][m] - bb[s][m] for s in common])  # (S, B, ...)
            n_boot = per_seed.shape[1]
            draw = np.random.default_rng(boot_seed + 1).integers(0, len(common), size=(n_boot, len(common)))
            dboot = per_seed[draw, np.arange(n_boot)[:, None]].mean(axis=1)
        else:
            dboot = np.mean([ba[s][m] for s in sa], axis=0) - np.mean([bb[s][m] for s in sb], axis=0)
        seeds_diff = np.array([pa[s][m] - pb[s][m] for s in common]) if paired else None
        for j, name in enumerate(LABEL_NAMES if m != "accuracy" else ["all"]):
            sl = (slice(None),) if m == "accuracy" else (slice(None), j)
            lo, hi = _interval(dboot[sl])
            entry = {"difference": _number(diff if m == "accuracy" else diff[j]), "ci95": [lo, hi],
                     "std": None if seeds_diff is None or len(common) < 2 else
                     _number(seeds_diff.std(axis=0, ddof=1) if m == "accuracy" else seeds_diff[:, j].std(ddof=1)),
                     "excludes_zero": _excludes_zero(lo, hi)}
            if m == "accuracy":
                out[m] = entry
            else:
                out.setdefault(name, {})[m] = entry
    return out


def _paired(scored: dict, name: str, ref: str | None, boot_seed: int) -> tuple[dict | None, list[str]]:
    """Row ``name`` − row ``ref`` per table both have complete seeds for, and the effects among them;
    None where either has no complete seed of the cross-validated dwarfs."""
    if not (name in scored and ref in scored and scored[name]["cv_dwarfs"][2] and scored[ref]["cv_dwarfs"][2]):
        return None, []
    out, effects = {}, []
    for t in TABLES:
        if scored[name][t][2] and scored[ref][t][2]:
            metrics = METRICS + ("accuracy",)  # giants: called giant; dwarfs: called dwarf
            out[t] = diff = _difference(scored[name][t], scored[ref][t], metrics, boot_seed)
            effects += _effects(name, ref, t, diff)
    return out, effects


def giant_ids(entries: dict) -> list[str]:
    """Every giant any record of :func:`collect`'s entries scored, sorted."""
    return sorted({i for e in entries.values() for parts in e["seeds"].values()
                   for part in parts["giants"].values() for i in part["id"]})


def _excludes_zero(lo: float | None, hi: float | None) -> bool:
    """Whether [lo, hi] excludes zero; ends within 1e-9 of zero are rounding (identical predictions), not effects."""
    return lo is not None and hi is not None and bool(lo > 1e-9 or hi < -1e-9)


def aggregate(out, folds: pd.DataFrame, budgets: dict | None = None, n_boot: int = 1000, boot_seed: int = 0) -> dict:
    """The study table from the records in ``out`` (module docstring): rows, paired differences, effects.

    The dwarfs are the fold table's; the giants every star of the records' ``giants`` parts.
    """
    from remap_lib.evaluation.studyrows import AGGREGATE_RECIPES, COMPARISONS, ROW_BY_NAME, ROWS

    entries = collect(load_records(out))
    k = int(folds["fold"].max()) + 1
    for row in ROWS:  # rows computed here from their source's records, not by the runs
        if row.recipe in AGGREGATE_RECIPES and row.source in entries:
            entries[row.name] = (mean_entry(entries[row.source]) if row.recipe == "pmf mean"
                                 else conformal_entry(entries[row.source], k))
    giants = giant_ids(entries)
    rng = np.random.default_rng(boot_seed)
    sizes = {"cv_dwarfs": len(folds), "calibration_stars": int((folds["role"] == "calibration").sum()),
             "giants": len(giants)}
    idx = {t: rng.integers(0, n, size=(n_boot, n)) for t, n in sizes.items()}
    scored: dict[str, dict] = {}  # row -> table -> (point per seed, boot per seed, seeds)
    models: dict[str, dict] = defaultdict(dict)  # row -> table -> samples resampling models too, or None
    accuracy_per_model: dict[str, dict] = defaultdict(dict)  # row -> table -> per seed, each model's accuracy
    for name, entry in entries.items():
        scored[name] = {}
        for t, table in row_tables(entry, folds, giants).items():
            seeds = sorted(table["seeds"])
            per_model = {s: replicate_metrics(table["seeds"][s], table["truth"]) for s in seeds}
            point = {s: _replicate_mean(per_model[s]) for s in seeds}
            if seeds and len(per_model[seeds[0]]) > 1:  # several models per seed: the giants
                accuracy_per_model[name][t] = [[_number(m["accuracy"]) for m in per_model[s]] for s in seeds]
            replicates = {s: replicate_metrics(table["seeds"][s], table["truth"], idx[t]) for s in seeds}
            boot = {s: _replicate_mean(replicates[s]) for s in seeds}
            scored[name][t] = (point, boot, seeds)
            models[name][t] = models_bootstrap(replicates, np.random.default_rng(boot_seed + 2))
    rows, effects, warnings = [], [], []
    for row in ROWS:
        entry = entries.get(row.name)
        records = entry["records"] if entry else []
        seeds = scored[row.name]["cv_dwarfs"][2] if entry else []
        obj = {"name": row.name, "kind": row.kind, "budget": row.budget, "seed_meaning": row.seeds,
               "rehearsal": row.rehearsal, "distill": row.distill,
               "distill_labels": list(row.distill_labels) if row.distill else None,
               "source": row.source if row.kind == "derived" else None, "snr": row.snr,
               "reference": row.reference, "n_seeds": len(seeds), "seeds": seeds, "n_records": len(records),
               "config": records[0]["config"] if records else None,
               "devices": sorted({r["device"] for r in records}),
               "wall_s_per_run": _number(np.mean([r["wall_s"] for r in records])) if records else None}
        if entry and entry.get("factors"):
            obj["interval_factors"] = _mean_factors(entry["factors"])
        for t in TABLES:
            point, boot, s = scored[row.name][t] if entry else ({}, {}, [])
            metrics = METRICS + ("accuracy",)  # giants: called giant; dwarfs: called dwarf
            obj[t] = {"n": sizes[t], "n_seeds": len(s), **_summary(point, boot, s, metrics)} if s else None
            if s and models[row.name].get(t):
                obj[t]["ci95_models"] = _models_intervals(models[row.name][t], metrics)
            if s and accuracy_per_model[row.name].get(t):
                obj[t]["accuracy_per_model"] = accuracy_per_model[row.name][t]  # [seed][fold model]
        paired, found = _paired(scored, row.name, row.reference, boot_seed)
        if paired is not None:
            obj["paired"] = {"reference": row.reference, **paired}
            effects += found
        rows.append(obj)
        for key in ("miles", "synthetic", "synthetic_pixel_in_lsf", "folds", "pretrained_deep-remap_weights",
                    "pretrained_mse_weights"):
            seen = {r["data"].get(key) for r in records} - {None}  # records before weights were hashed lack it
            if len(seen) > 1:
                warnings.append(f"{row.name}: runs read {len(seen)} different {key} inputs")
        settings = {json.dumps(_comparable(r["config"]), sort_keys=True) for r in records}
        if len(settings) > 1:
            warnings.append(f"{row.name}: runs used {len(settings)} different settings (budgets or profiles)")
    comparisons = []
    for name, ref in COMPARISONS:
        paired, found = _paired(scored, name, ref, boot_seed)
        if paired is not None:
            comparisons.append({"row": name, "reference": ref, **paired})
            effects += found
    unknown = sorted(set(entries) - set(ROW_BY_NAME))
    warnings += [f"records hold predictions of unknown row {u!r} (left out)" for u in unknown]
    return {"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "protocol": __doc__.strip().split("\n\n")[1:],
            "folds": {"k": int(folds["fold"].max()) + 1, "n_dwarfs": len(folds),
                      "stars_per_fold": folds["fold"].value_counts().sort_index().tolist(),
                      "n_calibration_stars": sizes["calibration_stars"], "n_giants": len(giants)},
            "bootstrap": {"resamples": n_boot, "seed": boot_seed, "interval": "2.5 and 97.5 percentiles"},
            "budgets": budgets, "compute": compute(out), "rows": rows, "comparisons": comparisons, "effects": effects,
            "warnings": warnings}


def compute(out) -> dict:
    """What the recorded runs under ``out`` cost, pretraining included: runs, CPU and wall hours, per kind.

    CPU time is what one thread spent (the runs are single-threaded and niced: wall time depends on what
    else ran); resumed runs count only their last attempt, so the totals are lower bounds.
    """
    files = [p for part in ("pretrain", "runs") for p in sorted((Path(out) / part).rglob("*.json"))]
    records = [json.loads(p.read_text()) for p in files]
    by_kind: dict[str, dict] = {}
    for r in records:
        k = by_kind.setdefault(r.get("kind", "?"), {"runs": 0, "cpu_hours": 0.0, "wall_hours": 0.0})
        k["runs"] += 1
        k["cpu_hours"] += (r.get("cpu_s") or r.get("wall_s") or 0.0) / 3600
        k["wall_hours"] += (r.get("wall_s") or 0.0) / 3600
    total = {key: sum(k[key] for k in by_kind.values()) for key in ("runs", "cpu_hours", "wall_hours")}
    return {**total, "devices": sorted({r.get("device", "?") for r in records}),
            "resumed_runs": sum(bool(r.get("resumed")) for r in records), "by_kind": by_kind}


def _comparable(config):
    """A run's settings without its seeds (different on purpose) and threads (speed only)."""
    if isinstance(config, dict):
        return {k: _comparable(v) for k, v in config.items() if k not in ("seed", "threads")}
    return config


def _effects(name: str, ref: str, table: str, diff: dict) -> list[str]:
    out = []
    note = "" if diff["interval_resamples_seeds"] else " (stars resampled; fewer than 2 paired seeds)"
    for label, entries in diff.items():
        if label in ("seeds", "interval_resamples_seeds"):
            continue
        items = {"": entries} if label == "accuracy" else entries
        for metric, e in items.items():
            if e["excludes_zero"]:
                what = "giant accuracy" if label == "accuracy" else f"{label} {metric}"
                unit = "" if label == "accuracy" or metric.startswith("coverage") else f" {UNITS[label]}"
                out.append(f"{name} − {ref} ({table}), {what}: {e['difference']:+.4g}{unit} "
                           f"[{e['ci95'][0]:+.4g}, {e['ci95'][1]:+.4g}]{note}")
    return out


def write_aggregate(result: dict, path) -> Path:
    with atomic_write(path, "w") as fh:
        json.dump(result, fh, indent=1, allow_nan=False)
        fh.write("\n")
    return Path(path)
