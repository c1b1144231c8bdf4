"""The book's generated pages, written at build time from what produced the numbers, so they cannot drift.

    python -m remap_lib.book.bookpages [--out book/generated] [--profile default] [--run-log FILE]

writes into ``--out`` (``make book`` runs it before ``jupyter-book build``):

- ``parameters.md`` — every notebook's parameters with their values per profile and their meaning,
  read from the notebooks' ``parameters`` cells (the inline comment on each line) and
  :data:`remap_lib.training.profiles.PROFILES` (:mod:`remap_lib.book.parameterspage`);
- ``reproducibility.md`` — package versions, seeds, data hashes, machine and wall time per notebook
  (the run log that :func:`remap_lib.book.notebooks.run_all` writes beside the executed notebooks;
  :mod:`remap_lib.book.reproducibility`);
- ``performance.md`` and ``figures/perf_*.png`` — the benchmarks in ``bench/results/*.json`` beside
  their baselines; a benchmark without results says so and gives its command
  (:func:`remap_lib.book.performance.performance_page`);
- ``robustness.md`` and ``figures/robustness_*.png`` — out-of-domain detection, noise, tilt, RV and
  resolution, from ``results/ood.json``, ``noise_widening.json`` and ``robustness.json``
  (:func:`remap_lib.book.robustnesspage.book_page`);
- fragments that ``book/course.md`` and ``book/limitations.md`` include (no headings of their own):
  ``course_times.md`` (measured run times per profile, from ``results/run_times/<profile>.json``;
  :mod:`remap_lib.book.reproducibility`), ``exercises.md`` (each notebook's "Try this" items;
  :mod:`remap_lib.book.parameterspage`) and ``limitations_numbers.md`` (from the
  profile's ``results`` metrics); ``headline.md``, which ``book/intro.md`` opens with (the study's
  headline table, from ``results/study.json``).

Links in the fragments are relative to ``book/``, where the including pages live; links in the
pages are relative to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from remap_lib.book.markdown import LABELS, table_cell
from remap_lib.book.notebooks import list_notebooks
from remap_lib.book.parameterspage import exercises_fragment, parameter_problems, parameters_page, read_parameters
from remap_lib.book.performance import BENCH_RESULTS, performance_page
from remap_lib.book.reproducibility import course_times_fragment, reproducibility_page
from remap_lib.book.results import load_metrics, metrics_path
from remap_lib.fileio import atomic_write
from remap_lib.paths import REPO_ROOT
from remap_lib.training.profiles import PROFILE_NAMES

OUT_DIR = REPO_ROOT / "book" / "generated"


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
