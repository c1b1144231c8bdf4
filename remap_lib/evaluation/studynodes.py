"""The grid's held-out nodes, scored by each pretrained network of the study (issue 12's synthetic goal).

Issue 12 asks for σ ≤ 60 K / 0.12 / 0.06 dex and a T<sub>eff</sub> MAD ≤ 25 K on the synthetic grid's held-out
nodes at S/N 50: the error tail of a network on spectra of its own library. The rows that pretrain (the
reduced budget's) record, per seed, their pretrained network's predictions for those nodes
(:func:`remap_lib.evaluation.studyruns.run_task`). Per row and label this module gives the mean over seeds of
σ, bias, MAD and the 68/95 % coverage (:func:`remap_lib.evaluation.studystats.label_metrics`), and, for a
row paired with its reference, the difference on the same nodes and seeds. Intervals are percentile
bootstraps that resample the nodes (the same resample for both rows) and the paired seeds together.

    python -m remap_lib.evaluation.studynodes [--out results/study_nodes.json]

A row that learns from another grid (``grid lines as wide as MILES's``) is scored on that grid's held-out
nodes: the same nodes, degraded its way.
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import numpy as np

from remap_lib.constants import LABEL_NAMES
from remap_lib.evaluation.studyrows import COMPARISONS, ROW_BY_NAME
from remap_lib.evaluation.studyruns import SYNTHETIC_SNR
from remap_lib.evaluation.studystats import METRICS, _part_array, label_metrics
from remap_lib.fileio import write_json
from remap_lib.paths import RESULTS_DIR

N_BOOT = 2000
PART = "synthetic_test"
NODES_FILE = RESULTS_DIR / "study_nodes.json"


def load_node_predictions(out) -> dict[str, dict[int, tuple[list[str], np.ndarray, np.ndarray]]]:
    """Row -> seed -> (node ids, truth (n, 3), predictions (n, 3, 5)), from the pretraining records under ``out``."""
    rows: dict[str, dict] = {}
    for path in sorted((Path(out) / "pretrain").rglob("*.json")):
        rec = json.loads(path.read_text())
        for name, parts in rec.get("predictions", {}).items():
            if PART in parts:
                rows.setdefault(name, {})[int(rec["seed"])] = _part_array(parts[PART])
    return rows


def _common_ids(*per_seed: dict) -> list[str]:
    """The node ids every seed of every given row predicted, sorted."""
    return sorted(set.intersection(*(set(v[0]) for rows in per_seed for v in rows.values())))


def _aligned(per_seed: dict, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """truth (n, 3) and predictions (S, n, 3, 5) of every seed, on ``ids`` in that order."""
    preds, truth = [], None
    for seed in sorted(per_seed):
        got, t, p = per_seed[seed]
        where = {i: k for k, i in enumerate(got)}
        order = [where[i] for i in ids]
        preds.append(p[order])
        truth = t[order] if truth is None else truth
    return truth, np.stack(preds)


def _seed_mean(pred: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per metric (3,), the mean over seeds (axis 0 of ``pred``) of each seed's metric."""
    per = label_metrics(pred, truth)
    return {m: per[m].mean(axis=0) for m in METRICS}


def summarize(rows: dict, seed: int = 0, n_boot: int = N_BOOT) -> dict:
    """Per row: seeds, nodes, metrics (mean over seeds, with 95 % intervals) and the paired difference with
    its reference where that row is recorded too, on the seeds both have."""
    result = {}
    for name, per_seed in rows.items():
        rng = _row_rng(seed, name, "summary")
        ids = _common_ids(per_seed)
        truth, pred = _aligned(per_seed, ids)
        boot_nodes = rng.integers(0, len(ids), size=(n_boot, len(ids)))
        boot_seeds = rng.integers(0, len(pred), size=(n_boot, len(pred)))
        entry = {"seeds": sorted(per_seed), "nodes": len(ids), "metrics": {}, "paired": None}
        point = _seed_mean(pred, truth)
        samples = _boot(pred, truth, boot_nodes, boot_seeds)
        for m in METRICS:
            entry["metrics"][m] = {n: {"value": float(point[m][j]),
                                       "ci95": [float(v) for v in np.nanpercentile(samples[m][:, j], [2.5, 97.5])]}
                                   for j, n in enumerate(LABEL_NAMES)}
        result[name] = entry
    for name, entry in result.items():
        reference = ROW_BY_NAME[name].reference if name in ROW_BY_NAME else None
        if reference in rows:
            entry["paired"] = _paired(rows[name], rows[reference], reference, _row_rng(seed, name, "paired"), n_boot)
    return result


def comparisons(rows: dict, seed: int = 0, n_boot: int = N_BOOT) -> list[dict]:
    """The paired differences of :data:`~remap_lib.evaluation.studyrows.COMPARISONS` whose two rows are recorded:
    like a row's ``paired`` entry, with ``row`` added."""
    return [{"row": name, **_paired(rows[name], rows[ref], ref, _row_rng(seed, f"{name} vs {ref}", "paired"), n_boot)}
            for name, ref in COMPARISONS if name in rows and ref in rows]


def _row_rng(seed: int, name: str, stage: str) -> np.random.Generator:
    """A row's own bootstrap stream: adding or removing another row leaves this row's intervals as they were."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8")), zlib.crc32(stage.encode("utf-8"))])


def _boot(pred, truth, boot_nodes, boot_seeds) -> dict[str, np.ndarray]:
    """(B, 3) bootstrap samples of each metric's seed mean: nodes and seeds resampled together."""
    per = label_metrics(pred[:, boot_nodes], truth[boot_nodes])  # (S, B, 3)
    # sample b averages the seeds boot_seeds[b] (drawn with replacement), each on sample b's nodes
    return {m: np.take_along_axis(per[m], boot_seeds.T[:, :, None], axis=0).mean(axis=0) for m in METRICS}


def _paired(row: dict, ref: dict, reference: str, rng, n_boot: int) -> dict:
    seeds = sorted(set(row) & set(ref))
    row, ref = {s: row[s] for s in seeds}, {s: ref[s] for s in seeds}
    ids = _common_ids(row, ref)
    truth, a = _aligned(row, ids)
    _, b = _aligned(ref, ids)
    boot_nodes = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    boot_seeds = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    pa, pb = _seed_mean(a, truth), _seed_mean(b, truth)
    sa, sb = _boot(a, truth, boot_nodes, boot_seeds), _boot(b, truth, boot_nodes, boot_seeds)
    out = {"reference": reference, "seeds": seeds, "nodes": len(ids), "difference": {}}
    for m in METRICS:
        out["difference"][m] = {}
        for j, n in enumerate(LABEL_NAMES):
            lo, hi = np.nanpercentile(sa[m][:, j] - sb[m][:, j], [2.5, 97.5])
            out["difference"][m][n] = {"value": float(pa[m][j] - pb[m][j]), "ci95": [float(lo), float(hi)],
                                       "excludes_zero": bool(lo > 0 or hi < 0)}
    return out


def read_nodes(path=NODES_FILE) -> dict:
    """The report ``python -m remap_lib.evaluation.studynodes`` writes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no held-out node report; run `python -m remap_lib.evaluation.studynodes`")
    return json.loads(path.read_text(encoding="utf-8"))


def table(report: dict, rows, metrics=("sigma", "mad", "bias")):
    """A DataFrame, one line per row: each metric per label as "value [lo, hi]" (mean over seeds)."""
    import pandas as pd

    from remap_lib.evaluation.studyreport import LABEL_TEXT, METRIC_TEXT, _decimals, _fmt

    lines = []
    for name in rows:
        entry = report["rows"].get(name)
        if entry is None:
            continue
        line = {"row": name, "seeds": len(entry["seeds"]), "nodes": entry["nodes"]}
        for m in metrics:
            for n in LABEL_NAMES:
                v, d = entry["metrics"][m][n], _decimals(n, m)
                line[f"{METRIC_TEXT[m]} {LABEL_TEXT[n][0]}"] = (f"{_fmt(v['value'], d)} "
                                                                f"[{_fmt(v['ci95'][0], d)}, {_fmt(v['ci95'][1], d)}]")
        lines.append(line)
    return pd.DataFrame(lines).set_index("row") if lines else pd.DataFrame()


def effect_sentence(report: dict, row: str, metric: str = "sigma", label: str = "teff",
                    reference: str | None = None) -> str:
    """The paired difference (row − its reference, or ``reference`` from the report's ``comparisons``) on the
    held-out nodes, with its interval and verdict."""
    from remap_lib.evaluation.studyreport import LABEL_TEXT, METRIC_TEXT, _decimals, comparison

    if reference is None:
        paired = report["rows"].get(row, {}).get("paired")
    else:
        paired = comparison(report, row, reference)
    if not paired:
        return f"{row}: no paired held-out node scores yet"
    e, d = paired["difference"][metric][label], _decimals(label, metric)
    unit = "" if metric.startswith("coverage") else f" {LABEL_TEXT[label][1]}"
    verdict = "an effect (the interval excludes zero)" if e["excludes_zero"] else \
        "no detectable difference at this budget"
    lo, hi = e["ci95"]
    return (f"{row} − {paired['reference']}, {METRIC_TEXT[metric]} of {LABEL_TEXT[label][0]} on the grid's "
            f"{paired['nodes']} held-out nodes at S/N {report['snr']:g}: {e['value']:+.{d}f}{unit} "
            f"[{lo:+.{d}f}, {hi:+.{d}f}] over {len(paired['seeds'])} paired seeds: {verdict}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", default=str(RESULTS_DIR / "study"), help="the study's records")
    parser.add_argument("--out", default=str(NODES_FILE))
    args = parser.parse_args(argv)
    rows = load_node_predictions(args.records)
    if not rows:
        raise SystemExit(f"no pretraining record under {args.records}/pretrain holds held-out node predictions: "
                         "run `remap study run` for a reduced-budget row first")
    result = {"source": "pretraining records of remap study run (results/study/pretrain)", "snr": SYNTHETIC_SNR,
              "rows": summarize(rows), "comparisons": comparisons(rows)}
    write_json(args.out, result)
    for name, entry in result["rows"].items():
        m = entry["metrics"]
        print(f"{name}: {len(entry['seeds'])} seeds, {entry['nodes']} nodes; σ "
              + " / ".join(f"{m['sigma'][n]['value']:.3g}" for n in LABEL_NAMES)
              + f"; MAD Teff {m['mad']['teff']['value']:.0f} K")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
