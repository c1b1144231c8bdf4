"""The book's robustness chapter: what the shipped model does with spectra unlike its fine-tuning stars.

Rendered from the committed reports (``results/ood.json``, ``noise_widening.json``, ``conformal.json``
and ``robustness.json``) that :mod:`remap_lib.evaluation.robustness`, :mod:`remap_lib.evaluation.conformal`
and :mod:`remap_lib.prediction.ood` write; nothing is measured here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from remap_lib.constants import LABEL_DIGITS, LABEL_HTML, LABEL_NAMES, LABEL_PLOT, LABEL_UNITS
from remap_lib.evaluation.robustness import TILT_SHAPES
from remap_lib.fileio import atomic_write
from remap_lib.paths import RESULTS_DIR
from remap_lib.prediction.oodinputs import EDGE_CLASSES, OUTSIDE_BOX

# one decimal more than elsewhere in the book: the shifts measured here are a fraction of the labels' errors
_UNITS = {n: (LABEL_HTML[n], unit, LABEL_DIGITS[n] + (n != "teff"))
          for n, unit in zip(LABEL_NAMES, LABEL_UNITS, strict=True)}


def _figure():
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, nothing global

    return Figure(figsize=(9.0, 3.4), layout="constrained")


def plot_roc(ood: dict, ax) -> None:
    """The detector's ROC, calibration stars against each class that has one (``results/ood.json``)."""
    styles = ("-", "--", ":", "-.")
    for k, (name, entry) in enumerate((n, e) for n, e in ood["classes"].items() if "roc" in e):
        ax.plot(entry["roc"]["fpr"], entry["roc"]["tpr"], drawstyle="steps-post", ls=styles[k // 10 % 4],
                label=f"{name} (AUC {entry['auc']:.2f})")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("calibration stars flagged (false-positive rate)")
    ax.set_ylabel("class flagged (true-positive rate)")
    ax.legend(fontsize=6.5, loc="lower right")


def plot_box_roc(ood: dict, ax) -> None:
    """The outside-the-box classifier's nested cross-validated ROC: in-domain MILES stars against those
    outside the box, with the operating point the report's rates give (``results/ood.json``, ``box``)."""
    box = ood["box"]
    ax.plot(box["roc"]["fpr"], box["roc"]["tpr"], drawstyle="steps-post",
            label=f"classifier alone, all {box['n_inside']} in-box stars (AUC {box['auc']:.3f})")
    held, out = ood["in_domain"], ood["outside_box"]
    ax.plot([held["flagged"]], [out["flagged"]], "o", color="C3",
            label=f"out_of_domain, the {held['n']} in-box stars not fine-tuned on")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("in-domain MILES stars flagged")
    ax.set_ylabel("MILES stars outside the box flagged")
    ax.legend(fontsize=6.5, loc="lower right")


def plot_noise_coverage(noise: dict, axes) -> None:
    """68 % coverage of the calibration stars against S/N, before and after the widening (``noise_widening.json``)."""
    levels = noise["roles"]["calibration"]["levels"]
    snr = [row["measured_snr"] for row in levels]
    for ax, name in zip(axes, LABEL_NAMES, strict=True):
        ax.plot(snr, [row[name]["coverage68"] for row in levels], "o-", label="calibrated only")
        ax.plot(snr, [row[name]["coverage68_widened"] for row in levels], "s-", label="widened for S/N")
        ax.axhspan(0.63, 0.73, color="0.9", zorder=0)
        ax.set_xscale("log")
        ax.set_xticks(snr, [f"{v:.0f}" for v in snr])
        ax.minorticks_off()
        ax.set_xlabel("S/N per pixel (measured)")
        ax.set_title(LABEL_PLOT[name], fontsize=9)
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("68 % interval coverage")
    axes[0].legend(fontsize=7)


def plot_shifts(curves: dict, axes) -> None:
    """Median Teff shift of the calibration stars against tilt, RV, S/N and LSF FWHM (``robustness.json``)."""
    for shape in TILT_SHAPES:
        rows = [r for r in curves["tilt"] if r["shape"] == shape]
        axes[0].plot([r["amplitude"] for r in rows], [r["teff"] for r in rows], "o-", label=shape)
    axes[0].set_xlabel("tilt amplitude")
    axes[0].legend(fontsize=7)
    rv = [r for r in curves["rv"] if "teff" in r]
    axes[1].plot([r["rv"] for r in rv], [r["teff"] for r in rv], "o-", label="taken at rest")
    if rv and "corrected" in rv[0]:
        axes[1].plot([r["rv"] for r in rv], [r["corrected"]["teff"] for r in rv], "s-", label="RV estimated")
    axes[1].set_xlabel("radial velocity (km/s)")
    axes[1].legend(fontsize=7)
    snr = [r["snr"] for r in curves["snr"]]
    axes[2].plot(snr, [r["teff"] for r in curves["snr"]], "o-")
    axes[2].set_xscale("log")
    axes[2].set_xticks(snr, [f"{v:g}" for v in snr])
    axes[2].minorticks_off()
    axes[2].set_xlabel("S/N per pixel")
    axes[3].plot([r["fwhm"] for r in curves["fwhm"]], [r["teff"] for r in curves["fwhm"]], "o-")
    axes[3].set_xlabel("undeclared LSF FWHM (Å)")
    axes[0].set_ylabel(f"median {LABEL_PLOT['teff']} shift (K)")
    for ax in axes:
        ax.axhspan(-30, 30, color="0.9", zorder=0)


def book_page(out_dir, results_dir=RESULTS_DIR) -> str:
    """The book's robustness chapter, every number read from the committed reports in ``results_dir``."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    figdir = out_dir / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    lines = ["# Robustness: noise, unfamiliar spectra, calibration and RV", "",
             "What the shipped model does with spectra unlike its fine-tuning stars, measured on MILES and "
             "rendered from the reports in `results/` when the book is built. Each section names the command "
             "that writes its report.", ""]
    for name, render in (("ood.json", _ood_section), ("noise_widening.json", _noise_section),
                         ("conformal.json", _noisy_intervals_section), ("robustness.json", _curves_section)):
        path = results_dir / name
        if not path.exists():
            lines += [f"`results/{name}` is missing: run the command below and rebuild.", ""]
            continue
        lines += render(json.loads(path.read_text()), figdir)
    return "\n".join(lines)


def _noisy_intervals_section(conformal: dict, figdir: Path) -> list[str]:
    """What ``predict`` does with a noisy star's intervals when the model has factors fitted per S/N."""
    by_snr = conformal.get("fit", {}).get("factors", {}).get("by_snr")
    measured = (conformal.get("measured") or {}).get("roles", {}).get("calibration")
    if not by_snr or not measured:
        return []

    def row(where, e):
        return f"| {where} | " + " | ".join(f"{e['after'][level][n]:.2f}" for level in ("68", "95")
                                           for n in LABEL_NAMES) + " |"

    rows = [row("own", measured)] + [row(snr, e) for snr, e in measured["at_snr"].items()]
    n_stars = measured["n"]
    spread68, spread95 = ((p * (1 - p) / n_stars) ** 0.5 if n_stars else float("nan") for p in (0.68, 0.95))
    return ["### Intervals fitted per S/N", "",
            "The shipped model also has interval factors fitted at S/N " + ", ".join(f"{x:g}" for x in by_snr["snr"])
            + " on the study's cross-validated dwarfs and their noisier copies (`python -m "
            "remap_lib.evaluation.conformal`). They stand in for the widening above on the intervals: `predict` "
            "reads every row's intervals from the PMF widened for missing data only, and scales those of stars "
            f"called dwarfs at the row's S/N, holding the factors of {min(by_snr['snr']):g} below it. The "
            f"{n_stars} calibration stars' coverage through `predict`, as they are and degraded (one noise draw "
            f"per star; with {n_stars} stars a coverage of 0.68 is known to about ±{spread68:.2f}, one of 0.95 to "
            f"±{spread95:.2f}):", "",
            "| S/N | " + " | ".join(f"{level} % {_UNITS[n][0]}" for level in ("68", "95") for n in LABEL_NAMES) + " |",
            "|---|" + "---:|" * 6, *rows, "",
            "*Measured with `python -m remap_lib.evaluation.conformal` (report `results/conformal.json`).*",
            ""]


def _save(fig, path: Path) -> None:
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)


def _fig_md(file: str, caption: str, alt: str) -> list[str]:
    return ["```{figure} " + file, f":alt: {alt}", ":width: 100%", "", caption, "```", ""]


def _ood_section(ood: dict, figdir: Path) -> list[str]:
    fig = _figure()
    box = ood.get("box")
    axes = fig.subplots(1, 2 if box else 1, squeeze=False)[0]
    plot_roc(ood, axes[0])
    if box:
        plot_box_roc(ood, axes[1])
    _save(fig, figdir / "robustness_roc.png")
    cal = ood["classes"]["calibration"]
    unlabelled = ood.get("unlabelled") or []
    giants = (" Inputs the network calls giant are held against a second flux model, fitted on the "
              + " and ".join(unlabelled) + " with the labels the network gives them (their literature labels are "
              "never read), so those stars are in the domain and their row is a false-flag rate."
              if unlabelled else "")
    lines = ["## Out-of-domain detection", "",
             "`out_of_domain` asks whether a spectrum looks like a training star with the labels the network "
             "gives it (a quadratic label → flux model of the fine-tuning stars, χ² with the input's noise), and "
             "how far it is from the training spectra in the network's embedding." + giants + " Rule: "
             + ood["rule"] + ". The novelty score is fitted on "
             + ", ".join(ood.get("fitted_on", ["finetune", "validation"]))
             + " only; the 30 calibration stars are never used to choose it.", ""]
    if box:
        lines += ["A star just outside the FGK box looks, in this window, like a star at the edge of the range, "
                  "and the network calls it one; the novelty score then finds it consistent. So `out_of_domain` "
                  "also fires, with the flag `outside_fgk_box`, when a classifier taught by MILES stars on both "
                  "sides of the box's edges puts the spectrum outside it (outlier exposure, "
                  "{cite}`hendrycks2019`): an L2 logistic regression on " + box["features"] + ", fitted on the "
                  f"{box['n_inside']} stars inside the box (" + ", ".join(box["inside"]) + f") and the "
                  f"{box['n_outside']} outside it. Its regularisation strength (C = {box['c']:g}) and threshold "
                  f"are chosen on out-of-fold scores, so that the two rules together flag at most "
                  f"{box['rate']:.0%} of the " + ", ".join(box["rate_counted_on"]) + " stars. The rates of those "
                  "classes below are **nested cross-validated**: no star is flagged by a classifier, C or "
                  "threshold fitted with it."]
        reps = box.get("replicates") or []
        if len(reps) > 1:
            out_r = [r["outside_box"] for r in reps]
            in_r = [r["in_domain"] for r in reps]
            lines[-1] += (f" The folds move these rates: over {len(reps)} fold assignments (seeds "
                          f"{reps[0]['seed']}–{reps[-1]['seed']}; the table is the first), `out_of_domain` flags "
                          f"{min(out_r):.0%}–{max(out_r):.0%} of the stars outside the box (mean "
                          f"{np.mean(out_r):.0%}) and {min(in_r):.1%}–{max(in_r):.1%} of the in-domain stars "
                          f"counted (mean {np.mean(in_r):.1%}): a threshold chosen on the inner folds is a little "
                          "optimistic.")
        missed = {n: round(e["n"] * (1 - e["flagged"])) for n, e in ood["classes"].items() if n in OUTSIDE_BOX}
        if sum(missed.values()):
            lines[-1] += (f" Of the {sum(missed.values())} stars outside the box left unflagged, "
                          f"{sum(missed.get(n, 0) for n in EDGE_CLASSES)} are at " + " or ".join(EDGE_CLASSES)
                          + ", within 500 K of its edges.")
        lines.append("")
    lines += ["| input | n | flagged | by the novelty score | by the classifier | embedding threshold alone | "
              "`teff_outside_range` | AUC (against the calibration stars) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    def share(e, key):  # a class with no spectra has no rates
        return "–" if e.get(key) is None else f"{e[key]:.0%}"

    for name, e in ood["classes"].items():
        auc = f"{e['auc']:.3f}" if "auc" in e else "–"
        lines.append(f"| {name} | {e['n']} | {share(e, 'flagged')} | {share(e, 'flagged_by_score')} | "
                     f"{share(e, 'flagged_by_box')} | {share(e, 'flagged_before')} | "
                     f"{share(e, 'teff_outside_range')} | {auc} |")
    out = ood.get("outside_box", {"n": 0, "flagged": float("nan")})
    lines += ["", f"Goal (issue 13): at least 95 % of the MILES stars outside the FGK box and of noise-only spectra "
              f"flagged, at most 5 % of in-domain FGK stars. Here {cal['flagged']:.0%} of the calibration stars "
              f"are flagged, and {out['flagged']:.0%} of the {out['n']} MILES stars outside the box (hotter than "
              f"7000 K or cooler than 4000 K)"
              + (f"; of the {ood['in_domain']['n']} in-domain stars not fine-tuned on, "
                 f"{ood['in_domain']['flagged']:.1%}" if "in_domain" in ood else "")
              + f". Other synthetic library: {ood['other_library']}."]
    held = ood.get("in_domain")
    if held and "flagged_or_outside_range" in out:
        lo, hi = ood["teff_range"]
        lines += [f"A second flag, `teff_outside_range`, fires when more than {ood['outside_mass']:g} of the Teff "
                  f"PMF lies outside {lo:g}–{hi:g} K, the range the model was fine-tuned on. Counting either flag, "
                  f"{out['flagged_or_outside_range']:.0%} of the stars outside the box are caught (out_of_domain "
                  f"alone: {out['flagged']:.0%}), and {held['flagged_or_outside_range']:.0%} of the {held['n']} "
                  "in-domain stars not fine-tuned on (" + ", ".join(held["classes"]) + f"; out_of_domain alone: "
                  f"{held['flagged']:.0%}, "
                  + ("which the classifier's threshold holds to at most " f"{box['rate']:.0%}, out of fold)."
                     if box else "which its threshold sets near 3 % on the stars it was chosen on; only the "
                     "calibration stars were never used for it).")]
        teffs = [t for n in held["classes"] for t in ood["classes"][n].get("teff_of_outside_range", [])]
        if teffs:
            near = np.mean([min(abs(t - lo), abs(t - hi)) <= 300 for t in teffs])
            lines[-1] += (f" Of the {len(teffs)} in-domain stars with `teff_outside_range`, {near:.0%} lie within "
                          "300 K of the range's edges by their literature Teff: an edge is sharp, literature "
                          "temperatures are not, so a star just inside it and one just outside look alike to any "
                          "detector. The flag says where the model extrapolates, not that its labels are wrong.")
    lines.append("")
    lines += _fig_md("figures/robustness_roc.png",
                     "Left: ROC of the novelty score, each class against the 30 calibration dwarfs. A curve hugging "
                     "the top-left corner separates that class completely. The score alone hardly separates "
                     "noise-only spectra, whose χ² is consistent with their noise: the S/N rule flags them."
                     + (" Right: the outside-the-box classifier's nested cross-validated ROC, in-domain MILES stars "
                        "against those outside the box; the dot is where `out_of_domain` (classifier or novelty "
                        "score) operates, on the in-box stars the network was not fine-tuned on."
                        if box else ""),
                     "ROC curves of the out-of-domain score per class of input")
    lines += ["*Measured with `python -m remap_lib.prediction.ood` (report `results/ood.json`).*", ""]
    return lines


def _noise_section(noise: dict, figdir: Path) -> list[str]:
    fig = _figure()
    plot_noise_coverage(noise, fig.subplots(1, 3))
    _save(fig, figdir / "robustness_noise.png")
    lines = ["## Noise", "",
             "The S/N of each input (the lower of what its ivar claims and its pixel-to-pixel scatter) widens "
             "the PMFs by a temperature factor fitted, relative to the clean spectra, on the validation stars "
             "degraded to each S/N; the calibration stars are reported.", "",
             "| S/N asked | measured | " + " | ".join(f"{_UNITS[n][0]} coverage (widened)" for n in LABEL_NAMES)
             + " | median [Fe/H] shift |", "|---|---:|---:|---:|---:|---:|"]
    for row in noise["roles"]["calibration"]["levels"]:
        lines.append(f"| {row['snr']} | {row['measured_snr']:.1f} | " + " | ".join(
            f"{row[n]['coverage68']:.2f} ({row[n]['coverage68_widened']:.2f})" for n in LABEL_NAMES)
            + f" | {row['feh']['median_shift']:+.2f} |")
    from remap_lib.prediction.inference import LOW_SNR

    clean = noise["roles"]["calibration"]["levels"][0]
    over = [_UNITS[n][0] for n in LABEL_NAMES if clean[n]["coverage68"] > 0.73]
    lines += ["", "The goal is 0.68 ± 0.05 at every S/N. The widening is relative to the clean spectra's intervals "
              "and never sharpens them"
              + (f", so where those already cover more than 0.73 ({', '.join(over)}: first row) the noisy ones "
                 "do too" if over else "") + ". Noise also moves the medians, not only their spread (last column): "
              f"below S/N {LOW_SNR:g} rows are flagged `low_snr`."]
    levels = noise["roles"]["calibration"]["levels"]
    if "coverage68_absolute_fit" in levels[0]["teff"]:
        cov = [row[n]["coverage68_absolute_fit"] for row in levels for n in LABEL_NAMES]
        lines += ["Had the temperatures been refitted to coverage at each S/N on the validation stars (the clean "
                  f"ones sharpened too), the calibration stars' coverage would range from {min(cov):.2f} to "
                  f"{max(cov):.2f}: 30 stars and 49 to fit on leave that much spread."]
    lines.append("")
    lines += _fig_md("figures/robustness_noise.png",
                     "68 % interval coverage of the calibration stars against S/N, with the calibrated PMFs (circles) "
                     "and widened for the measured S/N (squares); the grey band is 0.68 ± 0.05.",
                     "Coverage against S/N per label")
    lines += ["*Measured with `python -m remap_lib.evaluation.robustness noise` "
              "(report `results/noise_widening.json`).*", ""]
    return lines


def _curves_section(curves: dict, figdir: Path) -> list[str]:
    fig = _figure()
    plot_shifts(curves, fig.subplots(1, 4))
    _save(fig, figdir / "robustness_shifts.png")
    worst = {n: max(abs(r[n]) for r in curves["tilt"]) for n in LABEL_NAMES}
    rv = [r for r in curves["rv"] if "estimate_error_max" in r]
    lines = ["## Flux calibration, radial velocity and resolution", "",
             f"Median change of the predictions of the {curves['n']} calibration stars ({curves['statistic']}).", "",
             "| alteration | " + " | ".join(f"{_UNITS[n][0]} ({_UNITS[n][1]})" for n in LABEL_NAMES) + " |",
             "|---|---:|---:|---:|",
             "| worst tilt, ±30 % across the window (goal 30 K / 0.05 / 0.03) | "
             + " | ".join(f"{worst[n]:.{_UNITS[n][2]}f}" for n in LABEL_NAMES) + " |"]
    for r in curves["rv"]:
        if "teff" in r:
            lines.append(f"| RV {r['rv']:+.0f} km/s taken at rest | "
                         + " | ".join(f"{r[n]:+.{_UNITS[n][2]}f}" for n in LABEL_NAMES) + " |")
    for r in curves["fwhm"]:
        lines.append(f"| LSF {r['fwhm']:g} Å, undeclared | "
                     + " | ".join(f"{r[n]:+.{_UNITS[n][2]}f}" for n in LABEL_NAMES) + " |")
    u = curves.get("undeclared_resolution") or {}
    sharp, over = u.get("sharp"), u.get("oversampled")
    if sharp:
        for key, what in (("read_as_instrument", "read as the instrument's (no smoothing)"),
                          ("assumed", "predict's assumption from the sampling")):
            lines.append(f"| synthetic R = {sharp['resolution']:g} undeclared, {what}: largest of {sharp['n']} | "
                         + " | ".join(f"{sharp[key][n + '_max_abs']:.{_UNITS[n][2]}f}" for n in LABEL_NAMES) + " |")
    if over:
        lines.append(f"| MILES on {over['pixel']:g} Å pixels undeclared, predict's assumption: median | "
                     + " | ".join(f"{over['assumed'][n]:+.{_UNITS[n][2]}f}" for n in LABEL_NAMES) + " |")
    lines.append("")
    if rv:
        lines += [f"Without `rv`, predict estimates it by cross-correlation: over ±{max(abs(r['rv']) for r in rv):.0f} "
                  f"km/s the estimates are within {max(r['estimate_error_max'] for r in rv):.0f} km/s of the truth "
                  f"and the corrected medians within {max(abs(r['corrected']['teff']) for r in rv):.1f} K of the "
                  "rest-frame ones."]
    if sharp and over:
        from remap_lib.prediction.preparation import ASSUMED_PIXELS_PER_FWHM

        lines += [f"Undeclared finely sampled spectra are flagged `resolution_assumed` "
                  f"({sharp['assumed']['flagged']:.0%} of the synthetic ones, {over['assumed']['flagged']:.0%} of "
                  f"the oversampled MILES ones) and taken to have an LSF {ASSUMED_PIXELS_PER_FWHM:g} pixels wide: "
                  "right for a spectrograph's own sampling, too sharp for an interpolated spectrum, which then gets "
                  "smoothed once more."]
    lines.append("")
    lines += _fig_md("figures/robustness_shifts.png",
                     "Median T<sub>eff</sub> shift of the calibration stars against, left to right, a multiplicative "
                     "tilt, a "
                     "radial velocity (taken at rest, and with predict's RV estimate), S/N, and an LSF broader than "
                     "the model's but not declared. The grey band is ±30 K, the tilt goal: compare how far each "
                     "alteration takes the medians from it.",
                     "Prediction shift against tilt, RV, S/N and resolution")
    lines += ["*Measured with `python -m remap_lib.evaluation.robustness curves` "
              "(report `results/robustness.json`).*", ""]
    return lines
