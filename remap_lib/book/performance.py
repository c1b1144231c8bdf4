"""The book's performance page: the benchmarks in ``bench/results/*.json`` beside their baselines and targets.

:func:`performance_page` writes ``performance.md`` and ``figures/perf_*.png`` (from
:mod:`remap_lib.book.bookpages`, which ``make book`` runs); a benchmark without results says so and
gives its command, and one whose results have an unexpected shape is named on the page instead of
stopping the book.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from remap_lib.book.machine import describe_machine
from remap_lib.book.markdown import table_cell
from remap_lib.fileio import atomic_write
from remap_lib.paths import REPO_ROOT

BENCH_RESULTS = REPO_ROOT / "bench" / "results"


def _load_bench(name: str, bench_dir=BENCH_RESULTS) -> dict | None:
    path = Path(bench_dir) / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _figure(fig, path: Path) -> None:
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)


def _new_figure(width=9.0, height=3.6, ncols=1):
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, nothing global

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols)


def _figure_md(file: str, caption: str, alt: str) -> list[str]:
    return ["```{figure} " + file, f":alt: {alt}", ":width: 100%", "", caption, "```", ""]


def _provenance(result: dict, command: str) -> str:
    when = f" on {result['created']}" if result.get("created") else ""
    return f"*Measured with `{result.get('command') or command}`{when} ({describe_machine(result.get('machine'))}).*"


def _synthesis_section(result: dict, figdir: Path) -> list[str]:
    nodes = result["nodes"]
    names = [n["node"] for n in nodes]
    fig, ax = _new_figure(8, 3.4)
    width = 0.38
    for k, (variant, label) in enumerate((("pysme-default", "PySME defaults (baseline)"), ("ours", "our settings"))):
        ax.bar([i + (k - 0.5) * width for i in range(len(nodes))],
               [n["settings"][variant]["cpu_s"] for n in nodes], width, label=label)
    target = result.get("summary", {}).get("targets", {}).get("seconds_per_spectrum_per_core")
    if target:
        ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g} s")
    ax.set_xticks(range(len(nodes)), names)
    ax.set_ylabel("CPU time per spectrum (s, one core)")
    ax.set_xlabel("grid node")
    ax.legend()
    _figure(fig, figdir / "perf_synthesis.png")
    summary = result.get("summary", {})
    speed = summary["pysme-default"]["mean_cpu_s"] / summary["ours"]["mean_cpu_s"]
    lines = ["## Synthesis", "", _provenance(result, "python bench/bench_synthesis.py"), "",
             *_figure_md("figures/perf_synthesis.png",
                         f"PySME synthesis of one spectrum (4945–5755 Å) with our settings against PySME's defaults, "
                         f"for three grid nodes. Lower is better: ours is {speed:.1f}× faster on average; "
                         "the dashed line is the target per spectrum and core.",
                         "bar chart of CPU seconds per synthesized spectrum"),
             "| node | baseline CPU s | ours CPU s | ours rms vs baseline | ours max \\|Δ\\| |",
             "|---|---:|---:|---:|---:|"]
    for n in nodes:
        base, ours = n["settings"]["pysme-default"], n["settings"]["ours"]
        lines.append(f"| {n['node']} | {base['cpu_s']:.2f} | {ours['cpu_s']:.2f} | {ours['rms_vs_default']:.4f} | "
                     f"{ours['max_abs_vs_default']:.4f} |")
    return lines + ["", "Differences are in normalized flux after degradation to R = 11000.", ""]


def _preprocess_section(result: dict, figdir: Path) -> list[str]:
    bars = [("reference chain (baseline)", result["reference_spectra_per_s"]),
            ("ours, first call", result["ours_cold_spectra_per_s"]),
            ("ours, operator cached", result["ours_warm_spectra_per_s"])]
    fig, ax = _new_figure(8, 3.0)
    ax.barh([b[0] for b in bars], [b[1] for b in bars], color=["0.6", "C0", "C1"])
    ax.set_xscale("log")
    ax.set_xlabel("spectra per second (log scale)")
    _figure(fig, figdir / "perf_preprocess.png")
    inp, tgt = result.get("input", {}), result.get("target", {})
    return ["## Preprocessing", "", _provenance(result, "python bench/bench_preprocess.py"), "",
            *_figure_md("figures/perf_preprocess.png",
                        f"Degrading and resampling a batch of {inp.get('batch', '?')} PHOENIX-sized spectra "
                        f"({inp.get('npix', '?')} px) to {tgt.get('instrument', '?')} ({tgt.get('npix', '?')} px). "
                        f"Longer is better: ours is {result['speedup_cold']:.0f}× (first call) and "
                        f"{result['speedup_warm']:.0f}× (operator cached) faster than the reference chain "
                        "(`instrBroadGaussFast` + `spectres`).",
                        "horizontal bar chart of spectra per second"),
            "| | spectra/s | speed-up |", "|---|---:|---:|",
            f"| reference (baseline) | {result['reference_spectra_per_s']:.1f} | 1 |",
            f"| ours, first call | {result['ours_cold_spectra_per_s']:.1f} | {result['speedup_cold']:.1f} |",
            f"| ours, operator cached | {result['ours_warm_spectra_per_s']:.1f} | {result['speedup_warm']:.1f} |",
            "", f"rms difference from the reference: {result['rms_diff_relative_to_continuum']:.4f} of the continuum "
                f"(max {result['max_abs_diff_relative_to_continuum']:.4f}).", ""]


def _training_section(result: dict, figdir: Path) -> list[str]:
    rows = result["training"]
    peak = result["peak"]
    fig, (ax1, ax2) = _new_figure(10, 3.6, ncols=2)
    instruments = list(dict.fromkeys(r["instrument"] for r in rows))
    profiles = list(dict.fromkeys(r["profile"] for r in rows))
    width = 0.8 / len(instruments)
    for k, inst in enumerate(instruments):
        sel = {r["profile"]: r for r in rows if r["instrument"] == inst}
        xs = [i + (k - (len(instruments) - 1) / 2) * width for i in range(len(profiles))]
        ax1.bar(xs, [sel[p]["train_spectra_per_s"] if p in sel else 0 for p in profiles], width, label=inst)
        ax2.bar(xs, [sel[p]["train_gflop_per_s"] if p in sel else 0 for p in profiles], width, label=inst)
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(profiles)), profiles)
        ax.set_xlabel("architecture of the 02_pretrain profile")
    ax1.set_yscale("log")
    ax1.set_ylabel("training spectra per second (log)")
    ax2.axhline(peak["conv1d"]["gflop_per_s"], color="k", lw=1, label="conv1d peak (baseline)")
    frac = result.get("target", {}).get("fraction", 0.3)
    ax2.axhline(frac * peak["conv1d"]["gflop_per_s"], color="k", ls="--", lw=1, label=f"{frac:.0%} of peak (target)")
    ax2.set_ylabel("achieved GFLOP/s")
    ax2.set_ylim(0, 1.35 * peak["conv1d"]["gflop_per_s"])  # room for the legend above the peak line
    ax1.legend()
    ax2.legend(fontsize=8, ncols=2, loc="upper left")
    _figure(fig, figdir / "perf_training.png")
    lines = ["## Training", "", _provenance(result, "python bench/bench_training.py"), "",
             *_figure_md("figures/perf_training.png",
                         "Left: training throughput (augmentation, forward, loss, backward, optimizer) per "
                         "architecture and pixel grid. Right: the FLOP rate this achieves against the machine's "
                         "measured peak for a conv1d of the model's shape; the dashed line is the target fraction.",
                         "bar charts of training throughput and achieved FLOP rate"),
             "| profile | instrument | pixels | parameters | spectra/s | GFLOP/s | of conv1d peak |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['profile']} | {r['instrument']} | {r['npix']} | {r['n_params']:,} | "
                     f"{r['train_spectra_per_s']:.0f} | {r['train_gflop_per_s']:.1f} | "
                     f"{r['fraction_of_peak']['conv1d']:.0%} |")
    lines += ["", f"Peak on this machine: matmul {peak['matmul']['gflop_per_s']:.0f} GFLOP/s, conv1d "
              f"{peak['conv1d']['gflop_per_s']:.0f} GFLOP/s.", ""]
    return lines


def _inference_section(training: dict | None, inference: dict | None, figdir: Path) -> list[str]:
    lines = ["## Inference", ""]
    if inference is None:
        lines += ["End-to-end inference (reading, preprocessing and predicting users' spectra) **has not been "
                  "measured yet**. Measure it with", "", "```bash", "python bench/bench_inference.py", "```", "",
                  "and rebuild the book.", ""]
    else:
        cases = inference.get("cases", [])
        base = inference.get("baseline") or {}
        target = inference.get("target_spectra_per_s")
        labels = [c["name"] for c in cases] + ([f"{base['name']} (baseline)"] if base else [])
        values = [c["spectra_per_s"] for c in cases] + ([base["spectra_per_s"]] if base else [])
        fig, ax = _new_figure(8, 0.6 + 0.45 * max(len(labels), 1))
        ax.barh(labels, values, color=["C0"] * len(cases) + (["0.6"] if base else []))
        if target:
            ax.axvline(target, color="k", ls="--", lw=1, label=f"target {target:g} spectra/s")
            ax.legend()
        ax.set_xscale("log")
        ax.set_xlabel("spectra per second (log scale)")
        ax.invert_yaxis()
        _figure(fig, figdir / "perf_inference.png")
        lines += [_provenance(inference, "python bench/bench_inference.py"), "",
                  *_figure_md("figures/perf_inference.png",
                              "End-to-end inference throughput per case (grey: the baseline). Longer is better; "
                              "cases right of the dashed line meet the target.",
                              "horizontal bar chart of inference throughput"),
                  "| case | pixels | batch | threads | members | includes preprocessing | spectra/s |",
                  "|---|---:|---:|---:|---:|---|---:|"]
        for c in cases:
            lines.append(f"| {table_cell(c['name'])} | {c['npix']} | {c['batch_size']} | {c['threads']} | "
                         f"{c['members']} | {'yes' if c['includes_preprocessing'] else 'no'} | "
                         f"{c['spectra_per_s']:.0f} |")
        if base:
            lines.append(f"| {table_cell(base['name'])} (baseline) | | | | | | {base['spectra_per_s']:.0f} |")
        lines.append("")
    if training is not None and training.get("inference"):
        lines += ["The network alone (no reading or preprocessing; `model.eval()`, no gradients), from the "
                  "training benchmark:", "", "| profile | instrument | batch | spectra/s | GFLOP/s |",
                  "|---|---|---:|---:|---:|"]
        lines += [f"| {r['profile']} | {r['instrument']} | {r['batch']} | {r['spectra_per_s']:.0f} | "
                  f"{r['gflop_per_s']:.1f} |" for r in training["inference"]]
        lines.append("")
    return lines


def _scaling_section(streaming: dict | None, figdir: Path) -> list[str]:
    lines = ["## Scaling with the number of spectra", ""]
    if streaming is None or not streaming.get("runs"):
        return lines + ["Streaming many spectra through the predictor **has not been measured yet**. Measure it with",
                        "", "```bash", "python bench/bench_streaming.py", "```", "", "and rebuild the book.", ""]
    runs = sorted(streaming["runs"], key=lambda r: r["n_spectra"])
    n = [r["n_spectra"] for r in runs]
    fig, (ax1, ax2) = _new_figure(10, 3.6, ncols=2)
    ax1.plot(n, [r["wall_s"] for r in runs], "o-", label="measured")
    ax1.plot(n, [runs[0]["wall_s"] * x / n[0] for x in n], "k:", lw=1, label="linear from the smallest run")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("number of spectra")
    ax1.set_ylabel("wall time (s)")
    ax1.legend()
    ax2.plot(n, [r["peak_rss_mb"] for r in runs], "o-", color="C1", label="measured")
    target = streaming.get("target_peak_rss_mb")
    if target:
        ax2.axhline(target, color="k", ls="--", lw=1, label=f"limit {target:g} MB")
    ax2.set_xscale("log")
    ax2.set_xlabel("number of spectra")
    ax2.set_ylabel("peak resident memory (MB)")
    ax2.set_ylim(bottom=0)
    ax2.legend()
    _figure(fig, figdir / "perf_scaling.png")
    lines += [_provenance(streaming, "python bench/bench_streaming.py"), "",
              *_figure_md("figures/perf_scaling.png",
                          "Left: wall time against the number of spectra; on the dotted line time grows in "
                          "proportion to N (constant throughput). Right: peak memory, which should stay flat "
                          "and below the dashed limit however many spectra stream through.",
                          "line plots of wall time and peak memory against the number of spectra"),
              "| spectra | wall time (s) | spectra/s | peak memory (MB) |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['n_spectra']:,} | {r['wall_s']:.1f} | {r['spectra_per_s']:.0f} | {r['peak_rss_mb']:.0f} |"
              for r in runs]
    return lines + [""]


def performance_page(out_dir: Path, bench_dir=BENCH_RESULTS) -> str:
    """The performance chapter; each benchmark that cannot be shown says why instead of failing the build."""
    figdir = Path(out_dir) / "figures"
    lines = ["# Performance", "",
             "Generated when the book is built from the benchmark results in `bench/results/` "
             "(`make bench` or the individual scripts write them). Each measurement is shown beside its "
             "baseline; the machine and command are those recorded in the result file.", ""]
    sections = [("synthesis", "python bench/bench_synthesis.py", _synthesis_section),
                ("preprocess", "python bench/bench_preprocess.py", _preprocess_section),
                ("training", "python bench/bench_training.py", _training_section)]
    def section(name, command, render):
        result = _load_bench(name, bench_dir)
        if result is None:
            return [f"## {name.capitalize()}", "", f"**Not measured yet.** Run `{command}` and rebuild the book.", ""]
        return render(result, figdir)

    for name, command, render in sections:
        lines += _guarded(name, bench_dir, lambda n=name, c=command, f=render: section(n, c, f))
    lines += _guarded("inference", bench_dir, lambda: _inference_section(
        _guarded_load("training", bench_dir), _load_bench("inference", bench_dir), figdir))
    lines += _guarded("streaming", bench_dir, lambda: _scaling_section(_load_bench("streaming", bench_dir), figdir))
    return "\n".join(lines)


def _guarded_load(name: str, bench_dir) -> dict | None:
    """A result another section only borrows from (training's, for inference): unreadable counts as absent."""
    try:
        return _load_bench(name, bench_dir)
    except ValueError:
        return None


def _guarded(name: str, bench_dir, render) -> list[str]:
    # a result file that is not JSON, or of an unexpected shape, must not stop the book; the page and the log say so
    path = Path(bench_dir) / f"{name}.json"
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    try:
        return render()
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as err:
        print(f"bookpages: warning: {path} could not be shown: {err!r}", file=sys.stderr)
        return [f"## {name.capitalize()}", "",
                f"`{shown}` could not be shown ({table_cell(repr(err))}); rerun its benchmark.", ""]
