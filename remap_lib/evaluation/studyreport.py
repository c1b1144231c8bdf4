"""The committed study for readers: tables of mean ± interval, paired differences, forest plots, headline.

Everything here reads the aggregate that ``remap study aggregate`` writes (``results/study.json``,
see :mod:`remap_lib.evaluation.studystats`); nothing is computed anew, so the book, the README and a closing
note quote the same numbers. A row's figure is its mean over complete seeds, ``± std`` the spread
between seeds, and ``[lo, hi]`` the 95 % bootstrap interval over stars of that mean; a paired
difference (row − its reference, same folds, stars and seeds) has its own interval, which also
resamples the seeds. An effect is one whose interval excludes zero, nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from remap_lib.constants import GIANT_LOGG, LABEL_DIGITS, LABEL_HTML, LABEL_NAMES, LABEL_PLOT, LABEL_UNITS
from remap_lib.paths import RESULTS_DIR

STUDY_FILE = RESULTS_DIR / "study.json"
TABLE_TITLES = {"cv_dwarfs": "cross-validated MILES FGK dwarfs", "calibration_stars": "the 30 calibration stars",
                "giants": "MILES FGK giant candidates"}
LABEL_TEXT = {n: (LABEL_HTML[n], unit, LABEL_DIGITS[n]) for n, unit in zip(LABEL_NAMES, LABEL_UNITS, strict=True)}
METRIC_TEXT = {"sigma": "σ", "bias": "bias", "mad": "MAD", "coverage68": "68 % coverage",
               "coverage95": "95 % coverage"}
#: The paper's σ on its 30 MARVELS calibration stars (Gilda 2025; R ≈ 11000, not MILES' R ≈ 2100).
PAPER_SIGMA = {"teff": 75.0, "logg": 0.12, "feh": 0.08}
#: Rows of the headline table, in order: the paper's method, remap's recipe (``studyrows.SHIPPED_ROW``, named
#: here so that the book's pages need not import the training code) and its peers on the same stars.
HEADLINE_ROWS = ("deep-REMAP", "synthetic rehearsal",
                 "giant distillation + noise-matched augmentation, Teff and log g only",
                 "MSE regression CNN", "The Cannon", "chi2 grid fit", "pretrained only")


def read_study(path=STUDY_FILE) -> dict:
    """The aggregate ``results/study.json`` (or another ``remap study aggregate`` output)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no study aggregate; run `remap study run` then `remap study aggregate`")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _rows(result: dict, names=None) -> list[dict]:
    """The aggregate's rows named in ``names`` (all by default); a row of the study that an older
    aggregate does not hold yet is left out, a name the study does not know is an error."""
    from remap_lib.evaluation.studyrows import ROW_BY_NAME

    by_name = {r["name"]: r for r in result["rows"]}
    unknown = [n for n in (names or []) if n not in by_name and n not in ROW_BY_NAME]
    if unknown:
        raise KeyError(f"no study row {unknown[0]!r}; rows: {', '.join(by_name)}")
    return [by_name[n] for n in names if n in by_name] if names else list(result["rows"])


def _decimals(label: str, metric: str) -> int:
    return 2 if metric.startswith("coverage") else LABEL_TEXT[label][2] + (1 if label != "teff" else 0)


def _fmt(value, decimals: int) -> str:
    # + 0.0 after rounding: a value that rounds to zero prints "0", not "-0"
    return "–" if value is None else f"{round(value, decimals) + 0.0:.{decimals}f}"


def _interval_key(metric: str) -> str:
    return "ci95" if metric == "sigma" else f"{metric}_ci95"


def summary_frame(result: dict, table: str = "cv_dwarfs", metric: str = "sigma", rows=None) -> pd.DataFrame:
    """One line per row with a complete seed: ``n_seeds`` and, per label, mean, std over seeds and 95 % interval."""
    records = []
    for row in _rows(result, rows):
        t = row.get(table)
        if not t:
            continue
        rec = {"row": row["name"], "n": t["n"], "n_seeds": t["n_seeds"]}
        for label in LABEL_NAMES:
            lo, hi = t[label][_interval_key(metric)]
            rec.update({label: t[label][metric], f"{label}_std": t[label][f"{metric}_std"],
                        f"{label}_lo": lo, f"{label}_hi": hi})
        if t.get("accuracy") is not None:
            lo, hi = t["accuracy_ci95"]
            rec.update({"accuracy": t["accuracy"], "accuracy_std": t["accuracy_std"], "accuracy_lo": lo,
                        "accuracy_hi": hi})
            models = (t.get("ci95_models") or {}).get("accuracy")
            if models:  # the interval that also resamples the fold models (studystats.models_bootstrap)
                rec.update({"accuracy_models_lo": models[0], "accuracy_models_hi": models[1]})
        records.append(rec)
    return pd.DataFrame(records).set_index("row") if records else pd.DataFrame()


def formatted_table(result: dict, table: str = "cv_dwarfs", metrics=("sigma", "bias", "coverage68"),
                    rows=None) -> pd.DataFrame:
    """Strings ``mean ± std [lo, hi]`` per row, label and metric, for display in a notebook."""
    out = {}
    for metric in metrics:
        frame = summary_frame(result, table, metric, rows)
        for label in LABEL_NAMES:
            name, unit, _ = LABEL_TEXT[label]
            d = _decimals(label, metric)
            col = f"{METRIC_TEXT[metric]} {name}" + ("" if metric.startswith("coverage") else f" ({unit})")
            out[col] = {r: f"{_fmt(f[label], d)} ± {_fmt(f[f'{label}_std'], d + 1)} "
                           f"[{_fmt(f[f'{label}_lo'], d)}, {_fmt(f[f'{label}_hi'], d)}]" for r, f in frame.iterrows()}
        if metric == metrics[0] and "accuracy" in frame:
            out["called giant" if table == "giants" else "called dwarf"] = {
                r: f"{f['accuracy']:.1%} [{f['accuracy_lo']:.1%}, {f['accuracy_hi']:.1%}]"
                   + (f"; fold models [{f['accuracy_models_lo']:.1%}, {f['accuracy_models_hi']:.1%}]"
                      if pd.notna(f.get("accuracy_models_lo")) else "") for r, f in frame.iterrows()}
    frame = pd.DataFrame(out)
    if len(frame):
        seeds = summary_frame(result, table, metrics[0], rows)["n_seeds"]
        frame.insert(0, "seeds", seeds)
    return frame


def comparison(report: dict, row: str, reference: str) -> dict | None:
    """The paired difference ``row`` − ``reference`` among a report's extra ``comparisons`` (the study's aggregate
    or the held-out node report; :data:`~remap_lib.evaluation.studyrows.COMPARISONS`), or None."""
    return next((c for c in report.get("comparisons", []) if c["row"] == row and c["reference"] == reference), None)


def paired_frame(result: dict, table: str = "cv_dwarfs", metric: str = "sigma", rows=None,
                 reference: str | None = None) -> pd.DataFrame:
    """Paired differences row − reference: one line per row and label, with interval and ``excludes_zero``.

    ``reference``: against that row instead of each row's own, from the aggregate's extra comparisons
    (:data:`~remap_lib.evaluation.studyrows.COMPARISONS`).
    """
    records = []
    for row in _rows(result, rows):
        if reference is not None:
            row = {**row, "paired": comparison(result, row["name"], reference), "reference": reference}
        diff = (row.get("paired") or {}).get(table)
        if not diff:
            continue
        for label in (["all"] if metric == "accuracy" else LABEL_NAMES):
            e = diff.get(metric) if metric == "accuracy" else diff.get(label, {}).get(metric)
            if e is None:  # this metric was not compared on this table
                continue
            lo, hi = e["ci95"]
            records.append({"row": row["name"], "reference": row["reference"], "label": label,
                            "difference": e["difference"], "lo": lo, "hi": hi, "seed_std": e["std"],
                            "seeds": len(diff["seeds"] or []), "excludes_zero": e["excludes_zero"]})
    return pd.DataFrame(records)


def effect_sentence(result: dict, row: str, table: str = "cv_dwarfs", metric: str = "sigma",
                    label: str = "teff", reference: str | None = None) -> str:
    """A sentence a page can quote: the paired difference with its interval, and whether it is an effect.

    ``label`` is ignored for ``accuracy`` (the share called dwarf or giant is one number per star);
    ``reference`` compares with that row instead of the row's own (:func:`paired_frame`).
    """
    label = "all" if metric == "accuracy" else label
    frame = paired_frame(result, table, metric, [row], reference)
    frame = frame[frame["label"] == label] if len(frame) else frame
    if frame.empty:
        return f"{row}: no paired {metric} on {TABLE_TITLES[table]} yet"
    e = frame.iloc[0]
    verdict = "an effect (the interval excludes zero)" if e["excludes_zero"] else \
        "no detectable difference at this budget"
    if metric == "accuracy":  # a share: in percentage points
        what = "share called giant" if table == "giants" else "share called dwarf"
        scale, d, unit = 100.0, 1, " points"
    else:
        what, scale, d = f"{METRIC_TEXT.get(metric, metric)} of {LABEL_TEXT[label][0]}", 1.0, _decimals(label, metric)
        unit = "" if metric.startswith("coverage") else f" {LABEL_TEXT[label][1]}"
    diff, lo, hi = (scale * e[k] for k in ("difference", "lo", "hi"))
    return (f"{row} − {e['reference']}, {what} on {TABLE_TITLES[table]}: {diff:+.{d}f}{unit} "
            f"[{lo:+.{d}f}, {hi:+.{d}f}] over {e['seeds']} paired seeds: {verdict}")


def effect_sentences(result: dict, row: str, table: str = "cv_dwarfs", metrics=("sigma", "bias")) -> list[str]:
    """:func:`effect_sentence` for the share called right, then for each of ``metrics`` and each label."""
    return [effect_sentence(result, row, table, "accuracy"),
            *(effect_sentence(result, row, table, metric, label) for metric in metrics for label in LABEL_NAMES)]


def forest_plot(result: dict, table: str = "cv_dwarfs", metric: str = "sigma", rows=None, axes=None):
    """Paired differences (row − its reference) with their 95 % intervals, one panel per label.

    A filled marker is an interval that excludes zero (an effect); an open one is "no detectable
    difference". Rows compared with another reference than the first are marked "vs <reference>".
    """
    import matplotlib.pyplot as plt

    frame = paired_frame(result, table, metric, rows)
    if frame.empty:
        raise ValueError(f"no paired {metric} differences on {table} in the study: run more seeds")
    names = list(dict.fromkeys(frame["row"]))
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 0.45 * len(names) + 1.6), sharey=True, constrained_layout=True)
    first_ref = frame["reference"].iloc[0]

    def tick(name: str, ref: str) -> str:  # a variant named after its reference shows only what it adds
        # "X, Y at S/N 20" against "X at S/N 20" reads as a variant of X at that S/N
        snr = " at S/N " + ref.rsplit(" at S/N ", 1)[1] if " at S/N " in ref else ""
        if snr and ref.endswith(snr) and name.endswith(snr):
            name, ref = name.removesuffix(snr), ref.removesuffix(snr)
        short = f"… {name.removeprefix(ref + ', ')}" if name.startswith(ref + ", ") else name
        return f"{short}{snr}" if ref == first_ref else f"{short}{snr} (vs {ref}{snr})"

    ticks = [tick(n, r) for n, r in frame.drop_duplicates("row")[["row", "reference"]].itertuples(index=False)]
    for ax, label in zip(axes, LABEL_NAMES, strict=True):
        part = frame[frame["label"] == label].set_index("row").reindex(names)
        y = np.arange(len(names))[::-1]
        for yi, (_, e) in zip(y, part.iterrows(), strict=True):
            if pd.isna(e["difference"]):
                continue
            color = "C3" if e["excludes_zero"] else "0.35"
            ax.errorbar(e["difference"], yi, xerr=[[e["difference"] - e["lo"]], [e["hi"] - e["difference"]]],
                        fmt="o", color=color, mfc=color if e["excludes_zero"] else "white", capsize=3)
        ax.axvline(0, color="k", lw=0.8)
        unit = "" if metric.startswith("coverage") else f" [{LABEL_TEXT[label][1]}]"
        ax.set_xlabel(f"Δ {METRIC_TEXT[metric]} {LABEL_PLOT[label]}{unit}")
        ax.grid(axis="x", alpha=0.3)
        ax.set_yticks(y, ticks)
    axes[0].set_title(f"row − {first_ref}, {TABLE_TITLES[table]}", loc="left", fontsize=10)
    return axes


#: Coverage goals of issue 12: nominal level and tolerance per interval.
COVERAGE_GOALS = {"coverage68": (0.68, 0.05), "coverage95": (0.95, 0.03)}


def coverage_plot(result: dict, rows, tables=("cv_dwarfs", "giants"), axes=None):
    """Coverage of the 68 % and 95 % intervals per label, row and table, with 95 % intervals and the goal's band.

    One panel per table and level (rows of panels: tables; columns: 68 %, 95 %); within a panel each
    label is a group of markers, one per row.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(len(tables), 2, figsize=(11, 3.4 * len(tables)), squeeze=False,
                               constrained_layout=True)
    axes = np.atleast_2d(axes)
    names = [r["name"] for r in _rows(result, rows)]
    offsets = np.linspace(-0.25, 0.25, max(len(names), 1)) if len(names) > 1 else [0.0]
    for ax_row, table in zip(axes, tables, strict=True):
        for ax, metric in zip(ax_row, COVERAGE_GOALS, strict=True):
            nominal, tol = COVERAGE_GOALS[metric]
            ax.axhspan(nominal - tol, nominal + tol, color="0.88", zorder=0, label="goal")
            ax.axhline(nominal, color="0.5", lw=0.8, zorder=1)
            frame = summary_frame(result, table, metric, names)
            for k, name in enumerate(names):
                if name not in frame.index:
                    continue
                f = frame.loc[name]
                x = np.arange(len(LABEL_NAMES)) + offsets[k]
                y = np.array([f[n] for n in LABEL_NAMES], dtype=float)
                err = np.array([[y[j] - f[f"{n}_lo"], f[f"{n}_hi"] - y[j]] for j, n in enumerate(LABEL_NAMES)]).T
                ax.errorbar(x, y, yerr=err, fmt="os^D"[k % 4], capsize=3, label=name)
            ax.set_xticks(range(len(LABEL_NAMES)), [LABEL_PLOT[n] for n in LABEL_NAMES])
            ax.set_title(f"{METRIC_TEXT[metric]}, {TABLE_TITLES[table]}", fontsize=10)
            ax.set_ylabel("share of literature values inside")
    axes[0][0].legend(fontsize=8, loc="best")
    return axes


def headline_markdown(result: dict, rows=HEADLINE_ROWS, source: str = "results/study.json") -> str:
    """The intro's table: the paper, this reproduction and its peers on the same stars, with intervals."""
    def cell(t: dict | None, label: str) -> str:
        if not t:
            return "–"
        d = LABEL_TEXT[label][2]
        lo, hi = t[label]["ci95"]
        return f"{t[label]['sigma']:.{d}f} [{_fmt(lo, d)}, {_fmt(hi, d)}]"

    by_name = {r["name"]: r for r in result["rows"]}
    lines = ["| method | seeds | " + " | ".join(f"30 stars {LABEL_TEXT[n][0]}" for n in LABEL_NAMES) + " | "
             + " | ".join(f"CV {LABEL_TEXT[n][0]}" for n in LABEL_NAMES) + " | giants called giant |",
             "|---|---:|" + "---:|" * 7,
             "| the paper (MARVELS, R ≈ 11000) | – | "
             + " | ".join(f"{PAPER_SIGMA[n]:.{LABEL_TEXT[n][2]}f}" for n in LABEL_NAMES) + " | – | – | – | – |"]
    for name in rows:
        row = by_name.get(name)
        if not row or not row.get("cv_dwarfs"):
            continue
        g = row.get("giants") or {}
        giants = f"{g['accuracy']:.0%}" if g.get("accuracy") is not None else "–"
        lines.append(f"| {name} | {row['n_seeds']} | "
                     + " | ".join(cell(row.get("calibration_stars"), n) for n in LABEL_NAMES) + " | "
                     + " | ".join(cell(row.get("cv_dwarfs"), n) for n in LABEL_NAMES) + f" | {giants} |")
    n = result["folds"]
    note = (f"σ in K / dex / dex: mean over seeds with its 95 % bootstrap interval over stars [lo, hi]; "
            f"\"30 stars\" are the paper's calibration protocol, \"CV\" all {n['n_dwarfs']} MILES FGK dwarfs, "
            f"each predicted by a model that never saw it ({n['k']}-fold cross-validation); giants: the share of "
            f"the {n['n_giants']} MILES FGK giants with a predicted log g below {GIANT_LOGG}. Read from `{source}` "
            f"(written by `remap study aggregate`). The paper's numbers are on other spectra (MARVELS), "
            "so they are a reference, not a paired comparison.")
    return "\n".join([*lines, "", note, ""])


#: Issue 12's goals for the method users get: σ on the dwarfs (cross-validated and the 30 calibration stars)
#: and on the giants, in K / dex / dex; the share called right; the intervals' coverage (nominal ± tolerance).
GOAL_SIGMA = {"cv_dwarfs": PAPER_SIGMA, "calibration_stars": PAPER_SIGMA,
              "giants": {"teff": 120.0, "logg": 0.30, "feh": 0.15}}
GOAL_CALLED_RIGHT = 0.95
#: Issue 12's goal on the synthetic grid's held-out nodes at S/N 50: σ per label, and the Teff MAD (K).
GOAL_NODE_SIGMA = {"teff": 60.0, "logg": 0.12, "feh": 0.06}
GOAL_NODE_MAD_TEFF = 25.0


def goals_markdown(result: dict, row: str | None = None, nodes: dict | None = None) -> str:
    """Issue 12's goals against the measured value of ``row`` (default: remap's recipe), with 95 % intervals.

    A goal on a mean is met when the mean meets it (the interval says how surely); a goal to beat a peer
    is met when the paired difference's interval lies wholly below zero. Intervals are the conformally
    scaled row's (``<row>, conformal intervals``) where it is in the aggregate. ``nodes``: the report of
    ``python -m remap_lib.evaluation.nodebound`` (the shipped pretrained network on the grid's held-out
    nodes), which adds the synthetic goals, its intervals over nodes.
    """
    from remap_lib.evaluation.studyrows import (
        CONFORMAL,
        NOISE_DISTILL,
        NOISE_DISTILL_HELD_OUT,
        PEER_COMPARISONS,
        ROW_BY_NAME,
        SHIPPED_ROW,
    )

    row = row or SHIPPED_ROW
    by_name = {r["name"]: r for r in result["rows"]}
    if row not in by_name or not by_name[row].get("cv_dwarfs"):
        raise KeyError(f"the aggregate has no complete seed of {row!r}")
    main = by_name[row]
    intervals = by_name.get(f"{row}, {CONFORMAL}") or main
    lines = ["| goal | target | measured [95 %] | met |", "|---|---:|---:|:---:|"]

    def add(goal, target, value, lo, hi, met, digits, percent=False):
        show = (lambda v: "–" if v is None else f"{100 * v:.1f} %") if percent else (lambda v: _fmt(v, digits))
        lines.append(f"| {goal} | {target} | {show(value)} [{show(lo)}, {show(hi)}] | {'yes' if met else 'no'} |")

    for table in ("cv_dwarfs", "calibration_stars", "giants"):
        for label in LABEL_NAMES:
            name, unit, digits = LABEL_TEXT[label]
            e, goal = main[table][label], GOAL_SIGMA[table][label]
            add(f"σ {name}, {TABLE_TITLES[table]}", f"≤ {goal:.{digits}f} {unit}", e["sigma"], *e["ci95"],
                e["sigma"] <= goal, digits + (label != "teff"))
    compared = {c["reference"]: c for c in result.get("comparisons", []) if c["row"] == row}
    for peer in [ref for name, ref in PEER_COMPARISONS if name == row] + [r for r in compared
                                                                           if (row, r) not in PEER_COMPARISONS]:
        for label in ("teff", "logg"):
            name, unit, digits = LABEL_TEXT[label]
            goal = f"σ {name} − {peer}'s, cross-validated dwarfs (paired)"
            if peer not in compared:  # an aggregate written before the comparisons were
                lines.append(f"| {goal} | interval < 0 | not in the aggregate: rerun `remap study aggregate` | – |")
                continue
            d = compared[peer]["cv_dwarfs"][label]["sigma"]
            add(goal, "interval < 0", d["difference"], *d["ci95"], d["ci95"][1] is not None and d["ci95"][1] < 0,
                digits + (label != "teff"))
    # the held-out experiment was run for one recipe (distilling all three labels with noise): shown for any
    # recipe that distils, named beside every other one
    recipe = ROW_BY_NAME.get(row)
    held = by_name.get(NOISE_DISTILL_HELD_OUT) if recipe and recipe.distill else None
    own = row in (NOISE_DISTILL, NOISE_DISTILL_HELD_OUT)
    never_saw = "giants called giant, networks that never saw them" + (
        f" (row *{NOISE_DISTILL_HELD_OUT}*)" if held and not own else "")
    for table, what, source in (("giants", f"giants called giant (log g < {GIANT_LOGG:g})", main),
                                ("giants", never_saw, held),
                                ("cv_dwarfs", "dwarfs that stay dwarfs", main)):
        if source and source.get(table):
            t = source[table]
            add(what, f"≥ {100 * GOAL_CALLED_RIGHT:g} %", t["accuracy"], *t["accuracy_ci95"],
                t["accuracy"] >= GOAL_CALLED_RIGHT, 3, percent=True)
    for metric, (nominal, tolerance) in COVERAGE_GOALS.items():
        for table in ("cv_dwarfs", "giants"):
            for label in LABEL_NAMES:
                e = intervals[table][label]
                add(f"{METRIC_TEXT[metric]} {LABEL_TEXT[label][0]}, {TABLE_TITLES[table]}",
                    f"{nominal:.2f} ± {tolerance:.2f}", e[metric], *e[f"{metric}_ci95"],
                    abs(e[metric] - nominal) <= tolerance, 2)
    if nodes is not None:
        net, snr = nodes["network"], nodes["snr"]
        for label in LABEL_NAMES:
            name, unit, digits = LABEL_TEXT[label]
            goal = GOAL_NODE_SIGMA[label]
            add(f"σ {name}, the grid's held-out nodes at S/N {snr:g} (pretrained network)",
                f"≤ {goal:.{digits}f} {unit}", net[label]["sigma"], *net[label]["sigma_ci95"],
                net[label]["sigma"] <= goal, digits + (label != "teff"))
        add(f"MAD T<sub>eff</sub>, the grid's held-out nodes at S/N {snr:g} (pretrained network)",
            f"≤ {GOAL_NODE_MAD_TEFF:.0f} K", net["teff"]["mad"], *net["teff"]["mad_ci95"],
            net["teff"]["mad"] <= GOAL_NODE_MAD_TEFF, 0)
    nodes_note = ("The held-out nodes' rows are one network's (`python -m remap_lib.evaluation.nodebound`), their "
                  "intervals over nodes. " if nodes is not None else "")
    missing = "the interval ECE (≤ 0.03)" + ("" if nodes is not None else " and the synthetic held-out nodes "
                                                                         "(notebook 2)")
    return "\n".join([*lines, "", f"Row *{row}* (intervals: *{intervals['name']}*), read from the study's aggregate "
                       f"(`remap study goals`). {nodes_note}Not measured by the study: {missing}.", ""])


def budgets_markdown(result: dict) -> str:
    """The budgets every row ran at and what the recorded runs cost, as Markdown."""
    b = result.get("budgets") or {}
    lines = ["| budget | settings |", "|---|---|"]
    for name in ("default", "reduced"):
        if name in b:
            settings = ", ".join(f"{k} = {v}" for k, v in b[name].items())
            lines.append(f"| {name} | {settings} |")
    for name, arch in (b.get("networks") or {}).items():  # what the rows with a ``network`` train instead
        settings = ", ".join(f"{k} = {v}" for k, v in arch.items())
        lines.append(f"| reduced, {name} network | {settings} |")
    rows = {}
    for r in result["rows"]:
        rows.setdefault(r["budget"], []).append(r["name"])
    lines += ["", "| budget | rows |", "|---|---|"] + [f"| {k} | {', '.join(v)} |" for k, v in rows.items()]
    c = result.get("compute")
    if c:
        kinds = ", ".join(f"{k}: {v['runs']} runs, {v['cpu_hours']:.2f} h" for k, v in c["by_kind"].items())
        lines += ["", f"Recorded compute: **{c['runs']} runs, {c['cpu_hours']:.1f} CPU hours** (one thread each; "
                  f"{c['wall_hours']:.1f} h wall time as run, niced beside other work) on {', '.join(c['devices'])}. "
                  f"Per kind of run: {kinds}." + (f" {c['resumed_runs']} runs were resumed after an interruption "
                                                   "and count only their last attempt." if c["resumed_runs"] else "")]
    return "\n".join(lines) + "\n"


def markdown_tables(result: dict, tables=("cv_dwarfs", "calibration_stars", "giants"),
                    metrics=("sigma", "bias", "mad", "coverage68", "coverage95")) -> str:
    """Every row's full table (n, seeds, mean ± std [interval]) per table, as Markdown: a closing note's."""
    parts = []
    for table in tables:
        frame = formatted_table(result, table, metrics)
        if frame.empty:
            continue
        n = {r["name"]: (r.get(table) or {}).get("n") for r in result["rows"]}
        frame.insert(0, "n", [n[i] for i in frame.index])
        parts += [f"### {TABLE_TITLES[table]}", "", _to_markdown(frame), ""]
    return "\n".join(parts)


def _to_markdown(frame: pd.DataFrame) -> str:
    # pandas' to_markdown needs `tabulate`, which the package does not otherwise need
    cols = [frame.index.name or "row", *map(str, frame.columns)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join([str(i), *map(str, r)]) + " |" for i, r in zip(frame.index, frame.values, strict=True)]
    return "\n".join(lines)
