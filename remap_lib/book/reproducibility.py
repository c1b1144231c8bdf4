"""Where the book's numbers came from: measured run times, seeds, data hashes, packages and machines.

- :func:`course_times_fragment` (``course_times.md``): measured run times per notebook and profile,
  from the run logs committed under ``results/run_times/``;
- :func:`reproducibility_page` (``reproducibility.md``): wall time per notebook, seeds, data hashes,
  package versions and machine of the build (the run log :func:`remap_lib.book.notebooks.run_all`
  writes beside the executed notebooks), and :func:`across_machines_section`, what reproduces bit for
  bit and what only within the study's spread (``results/machine_spread.json``).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import sys
from pathlib import Path

from remap_lib.book.machine import describe_machine, machine_info
from remap_lib.book.markdown import LABELS, seconds_text, table_cell
from remap_lib.book.notebooks import BOOK_NOTEBOOK_DIR, NOTEBOOK_DIR, list_notebooks, read_run_log, run_log_path
from remap_lib.book.parameterspage import read_parameters
from remap_lib.fileio import sha256_file
from remap_lib.paths import DATA_DIR, REPO_ROOT, RESULTS_DIR
from remap_lib.training.profiles import PROFILE_NAMES

RUN_TIMES_DIR = RESULTS_DIR / "run_times"
NOT_MEASURED = "not measured"


# ------------------------------------------------------------------------------------------- run times
def committed_run_times(run_times_dir=RUN_TIMES_DIR) -> dict[str, dict]:
    """The measured run logs committed for each profile (missing profiles are absent)."""
    return {prof: read_run_log(Path(run_times_dir) / f"{prof}.json") for prof in PROFILE_NAMES
            if (Path(run_times_dir) / f"{prof}.json").exists()}


def course_times_fragment(names=None, run_times_dir=RUN_TIMES_DIR) -> str:
    names = names or list_notebooks()
    logs = committed_run_times(run_times_dir)
    times = {prof: {n: logs[prof]["notebooks"][n]["wall_s"] for n in names if n in logs[prof]["notebooks"]}
             for prof in logs}
    lines = ["| notebook | " + " | ".join(f"CPU, `{p}`" for p in PROFILE_NAMES) + " | GPU, any profile |",
             "|---|" + "---:|" * len(PROFILE_NAMES) + "---|"]
    for name in names:
        cells = [seconds_text(times[p][name]) if name in times.get(p, {}) else NOT_MEASURED for p in PROFILE_NAMES]
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {NOT_MEASURED} |")
    totals = []
    for prof in PROFILE_NAMES:
        measured = times.get(prof, {})
        if not measured:
            totals.append(NOT_MEASURED)
        else:  # a notebook added after the measurement makes the sum a lower bound
            partial = "" if len(measured) == len(names) else f" ({len(measured)} of {len(names)} notebooks)"
            totals.append(f"**{seconds_text(sum(measured.values()))}**{partial}")
    lines.append("| **all notebooks** | " + " | ".join(totals) + f" | {NOT_MEASURED} |")
    lines += ["", "Sources (`results/run_times/<profile>.json`, copied from the run log "
              "`book/notebooks/run_log.json` after a measured run):", ""]
    for prof in PROFILE_NAMES:
        if prof not in logs:
            lines.append(f"- `{prof}`: {NOT_MEASURED} — run `make notebooks PROFILE={prof}` and copy its run log.")
            continue
        entries = list(logs[prof]["notebooks"].values())
        machine = entries[0].get("machine") if entries else None
        source = logs[prof].get("source", "a run log")
        lines.append(f"- `{prof}`: {table_cell(source)} ({describe_machine(machine)}).")
    lines += ["", "No GPU was available to this project, so no time on a GPU has been measured; the "
              "`paper` profile is meant for one."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- reproducibility
def _requirements(path=REPO_ROOT / "requirements.txt") -> list[tuple[str, str]]:
    pins = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins.append((name.strip(), version.strip()))
    return pins


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _manifest(path=DATA_DIR / "MANIFEST.sha256") -> list[tuple[str, str, str]]:
    """(file, recorded sha256, status) for each shipped data file, hashed now."""
    rows = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        target = Path(path).parent / name.strip().lstrip("*")
        if not target.exists():
            status = "missing"
        else:
            status = "matches" if sha256_file(target) == digest.lower() else "**differs**"
        rows.append((name.strip(), digest, status))
    return rows


def reproducibility_page(profile: str, run_log=None, names=None, notebook_dir=NOTEBOOK_DIR) -> str:
    from remap_lib.data import cache

    names = names or list_notebooks()
    log = read_run_log(run_log if run_log is not None else run_log_path(BOOK_NOTEBOOK_DIR))
    runs = log["notebooks"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Reproducibility", "",
             f"Generated at {now}, when this book was built with the `{profile}` profile. Everything below is read "
             "from the build itself: the run log the notebook runner writes beside the executed notebooks "
             "(`book/notebooks/run_log.json`), the notebooks' `parameters` cells, the installed packages and "
             "the data files.", "",
             "## Wall time per notebook", ""]
    if runs:
        lines += ["| notebook | profile | overrides | started (UTC) | wall time | machine | load average at start |",
                  "|---|---|---|---|---:|---|---|"]
        for name in names + sorted(set(runs) - set(names)):
            r = runs.get(name)
            if r is None:
                lines.append(f"| `{name}` | not run | | | | | |")
                continue
            overrides = ", ".join(f"`{k}={v!r}`" for k, v in r.get("overrides", {}).items()) or "none"
            load = r.get("machine", {}).get("load_average_start")
            load = " / ".join(f"{x:.2f}" for x in load) if load else "—"
            machine = table_cell(describe_machine(r.get("machine")))
            lines.append(f"| `{name}` | `{r.get('profile')}` | {table_cell(overrides)} | {r.get('started') or '—'} | "
                         f"{seconds_text(r.get('wall_s'))} | {machine} | {load} |")
        total = sum(r.get("wall_s") or 0 for r in runs.values())
        lines += ["", f"Total notebook time: **{seconds_text(total)}**. The load average (1, 5, 15 min) shows whether "
                  "other work shared the machine.", ""]
    else:
        lines += ["No run log was found: the notebooks were not run by `remap book run` / `make book` "
                  "in this build.", ""]

    lines += ["## Seeds", "",
              "Each notebook's `seed` parameter (from its `parameters` cell, or the override of this run). "
              "Every random choice in a notebook derives from it.", "",
              "| notebook | seed | what it seeds |", "|---|---:|---|"]
    for name in names:
        seed = next((p for p in read_parameters(name, notebook_dir) if p.name == "seed"), None)
        if seed is None:
            lines.append(f"| `{name}` | — | no seed parameter |")
            continue
        value = runs.get(name, {}).get("overrides", {}).get("seed", seed.value)
        lines.append(f"| `{name}` | `{value!r}` | {table_cell(seed.meaning)} |")

    lines += ["", "## Data", "", "Shipped files, hashed while building this page against `data/MANIFEST.sha256`:", "",
              "| file | sha256 | now |", "|---|---|---|"]
    lines += [f"| `data/{f}` | `{d}` | {s} |" for f, d, s in _manifest()] or ["| (no manifest) | | |"]
    lines += ["", "Downloaded archives (`remap fetch` checks each against this sha256 from "
              "`remap_lib/data/cache.py`):", "",
              "| package | file | sha256 |", "|---|---|---|"]
    for archive in (cache.MILES_ARCHIVE, cache.MARCS_ARCHIVE, cache.GES_LINELIST_ARCHIVE):
        lines.append(f"| `{archive.requirement}` | `{archive.filename}` | `{archive.sha256}` |")

    lines += ["", "## Packages", "",
              f"Python {sys.version.split()[0]}. Pinned in `requirements.txt` and installed in the environment "
              "that built this page:", "", "| package | pinned | installed |", "|---|---|---|"]
    for name, pin in _requirements():
        installed = _installed(name)
        mark = "" if installed == pin else " **≠ pin**"
        lines.append(f"| `{name}` | {pin} | {installed or 'not installed'}{mark} |")

    lines += ["", *across_machines_section()]
    machine = machine_info()
    lines += ["", "## Machine", "", "The machine that built this page (`remap_lib/book/machine.py`):", "",
              "| | |", "|---|---|"]
    lines += [f"| {k} | {table_cell(v)} |" for k, v in machine.items()]
    lines += ["", "The benchmarks name their own machine: see the chapter {doc}`performance`.", ""]
    return "\n".join(lines)


def across_machines_section(spread_file=None) -> list[str]:
    """What repeats bit for bit and what only within the spread, from ``results/machine_spread.json``."""
    from remap_lib.evaluation.machinespread import SPREAD_FILE

    path = Path(spread_file or SPREAD_FILE)
    lines = ["## What reproduces exactly, and what within the spread", "",
             "- **Bit for bit everywhere:** the shipped files (the synthetic grid, the shipped pretrained networks, "
             "the splits; hashes above) and the downloaded archives.",
             "- **Bit for bit on the same machine:** everything trained or predicted from a fixed seed: the same "
             "commit, profile and seeds give the same networks, `results/metrics.json` and study records. Notebook 2 "
             "checks its pretrained network against the shipped one, which tells whether this machine matches the "
             "one that made them.",
             "- **Within the spread on another machine:** another CPU may add floating-point numbers in another "
             "order (other vector instructions in PyTorch's kernels); training turns those last-bit differences "
             "into other weights, so the fine-tuned results move. They are to be read with the study's intervals "
             "(chapter 8), which is what the table below checks.", ""]
    if not path.is_file():
        return lines + [f"`{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}` does not "
                        "exist yet: compare two builds with `python -m remap_lib.evaluation.machinespread` to measure "
                        "the spread.",
                        ""]
    spread = json.loads(path.read_text(encoding="utf-8"))
    rerun = spread.get("rerun_same_machine")
    if rerun:
        lines += [f"Measured on one machine: {rerun['identical_predictions']} of {rerun['records']} study records "
                  "run twice (same commit and seeds) gave identical predictions.", ""]
    names = list(spread["builds"])
    lines += ["| build | " + " | ".join(f"σ {lab} ({unit}), 30 stars" for _, lab, unit, _ in LABELS)
              + " | giants called giant |", "|---|" + "---:|" * 4]
    for name in names:
        h = spread["builds"][name]
        sig = h.get("calibration_sigma", {})
        lines.append(f"| {table_cell(name)} | " + " | ".join(
            f"{sig[k]:.{d + 1}f}" if k in sig else "–" for k, _, _, d in LABELS) + " | "
            + (f"{h['giants_called_giant']:.1%}" if "giants_called_giant" in h else "–") + " |")
    band = spread.get("study")
    if band:
        lines.append(f"| study: {table_cell(band['row'])}, {band['table'].replace('_', ' ')}, {band['n_seeds']} seeds, "
                     "mean [95 % interval] | " + " | ".join(
                         f"{band[k]['mean']:.{d + 1}f} [{band[k]['ci95'][0]:.{d + 1}f}, {band[k]['ci95'][1]:.{d + 1}f}]"
                         for k, _, _, d in LABELS) + " | "
                     + (f"{band['giants_called_giant']['mean']:.1%}" if "giants_called_giant" in band else "–")
                     + " |")
    lines.append("")
    for key, c in spread["comparisons"].items():
        lines.append(f"- {table_cell(key)}: **{c['different']} of {c['values']}** values in `results/metrics.json` "
                     f"differ (sections: {', '.join(c['sections_that_differ']) or 'none'}).")
    giants = (band or {}).get("giants_called_giant") or {}
    giant_range = spread.get("range", {}).get("giants_called_giant")
    if giants.get("ci95") and giant_range:
        lines.append(giants_spread_sentence(giants, giant_range["difference"]))
    covered, inside = spread.get("covered", {}), spread.get("inside", {})
    if covered:
        by = spread.get("covered_by", {})
        named = ", ".join(f"{k} ({by[k].replace('_', ' ')})" if by.get(k, "ci95") != "ci95" else k
                          for k, v in covered.items() if v)
        lines.append("- **The spread test:** the builds differ by no more than half the width of the study's 95 % "
                     f"interval for: {named or 'none'}"
                     + (f"; by more for: **{', '.join(k for k, v in covered.items() if not v)}**."
                        if not all(covered.values()) else "."))
    if inside:
        lines.append("- **The level test:** every build lies inside the study's interval (stars and seeds) for: "
                     f"{', '.join(k for k, v in inside.items() if v) or 'none'}"
                     + (f"; outside for: {', '.join(k for k, v in inside.items() if not v)}."
                        if not all(inside.values()) else "."))
    lines += ["", f"From `{path.name}`, written by `python -m remap_lib.evaluation.machinespread` on "
                  f"{spread['generated']}.", ""]
    return lines


def giants_spread_sentence(giants: dict, machine_difference: float) -> str:
    """The share of giants called giant: how far the machine moved it against how far seeds and training sets do."""
    def pct(interval):
        return f"[{interval[0]:.1%}, {interval[1]:.1%}]"

    text = f"- **Giants called giant:** the builds differ by {100 * machine_difference:.1f} points"
    if giants.get("largest_seed_range") is not None:
        text += (f". In the study, no fold model's share moved by more than {100 * giants['largest_seed_range']:.1f} "
                 "points between fine-tuning seeds, while the five fold models, fine-tuned on different dwarfs, "
                 f"range from {giants['model_means'][0]:.1%} to {giants['model_means'][1]:.1%} (means over seeds): "
                 "the share depends on which dwarfs a model is fine-tuned on far more than on its seed or machine")
        more = machine_difference > giants["largest_seed_range"]
        text += (". The machine moved it " + ("more than any seed did" if more else "no more than a seed did"))
    text += f". The study's interval of the mean over its fold models is {pct(giants['ci95'])} over stars and seeds"
    if giants.get("ci95_models"):
        text += f", {pct(giants['ci95_models'])} when the fold models are resampled too"
    if giants.get("single_models"):
        text += (f"; single models (every fold and seed) give {pct(giants['single_models'])}. A build is one "
                 "fine-tuned ensemble, not a mean over five, so the spread test below sets the builds against that "
                 "single-model range")
    return text + (". The book fine-tunes on its own split (the `finetune` role), not on a cross-validation fold, "
                   "so its level is not the study's; only the spread is compared.")
