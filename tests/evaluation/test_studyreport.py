"""The study's presentation: tables, paired differences and the headline, on a hand-written aggregate."""

import json

import matplotlib
import pytest

from remap_lib.evaluation import studyreport

matplotlib.use("Agg")


def _label(sigma, lo, hi, std=1.0):
    entry = {"sigma": sigma, "sigma_std": std, "ci95": [lo, hi]}
    for m in ("bias", "mad", "coverage68", "coverage95"):
        entry.update({m: 0.5, f"{m}_std": 0.0, f"{m}_ci95": [0.4, 0.6]})
    return entry


def _table(n, n_seeds, teff, accuracy=None):
    t = {"n": n, "n_seeds": n_seeds, "teff": _label(*teff), "logg": _label(0.2, 0.15, 0.25, 0.01),
         "feh": _label(0.1, 0.08, 0.12, 0.001)}
    if accuracy is not None:
        t.update({"accuracy": accuracy, "accuracy_std": 0.01, "accuracy_ci95": [accuracy - 0.05, accuracy + 0.05]})
    return t


def _diff(d, lo, hi):
    entry = {"difference": d, "ci95": [lo, hi], "std": 2.0, "excludes_zero": lo > 0 or hi < 0}
    return {m: entry for m in ("sigma", "bias", "mad", "coverage68", "coverage95")}


@pytest.fixture
def result():
    full = {"name": "deep-REMAP", "reference": None, "n_seeds": 5,
            "cv_dwarfs": _table(355, 5, (150.0, 130.0, 170.0)), "calibration_stars": _table(30, 5, (90.0, 70.0, 110.0)),
            "giants": {**_table(371, 5, (300.0, 280.0, 320.0), accuracy=0.3), "ci95_models": {"accuracy": [0.2, 0.4]}}}
    mse = {"name": "MSE regression CNN", "reference": "deep-REMAP", "n_seeds": 5,
           "cv_dwarfs": _table(355, 5, (160.0, 140.0, 180.0)), "calibration_stars": _table(30, 5, (80.0, 60.0, 100.0)),
           "giants": _table(371, 5, (250.0, 230.0, 270.0), accuracy=0.5),
           "paired": {"reference": "deep-REMAP",
                      "cv_dwarfs": {"seeds": [0, 1, 2, 3, 4], "interval_resamples_seeds": True,
                                    "teff": _diff(10.0, 2.0, 18.0), "logg": _diff(-0.01, -0.03, 0.01),
                                    "feh": _diff(0.0, -0.01, 0.01)},
                      "giants": {"seeds": [0, 1, 2, 3, 4], "interval_resamples_seeds": True,
                                 "accuracy": {"difference": 0.2, "ci95": [0.1, 0.3], "std": 0.01,
                                              "excludes_zero": True}}}}
    empty = {"name": "no SWA", "reference": "deep-REMAP", "n_seeds": 0, "cv_dwarfs": None,
             "calibration_stars": None, "giants": None}
    return {"folds": {"k": 5, "n_dwarfs": 355, "n_giants": 371}, "rows": [full, mse, empty]}


def test_summary_frame_reads_mean_std_and_interval_and_skips_rows_without_seeds(result):
    frame = studyreport.summary_frame(result, "cv_dwarfs")
    assert list(frame.index) == ["deep-REMAP", "MSE regression CNN"]
    assert frame.loc["MSE regression CNN", ["teff", "teff_std", "teff_lo", "teff_hi"]].tolist() == [160, 1, 140, 180]
    giants = studyreport.summary_frame(result, "giants")
    assert giants.loc["deep-REMAP", "accuracy"] == 0.3
    assert giants.loc["deep-REMAP", "accuracy_lo"] == pytest.approx(0.25)


def test_formatted_table_writes_mean_std_and_interval(result):
    frame = studyreport.formatted_table(result, "giants", metrics=("sigma",))
    assert frame.loc["deep-REMAP", "σ T<sub>eff</sub> (K)"] == "300 ± 1.0 [280, 320]"
    assert frame.loc["MSE regression CNN", "called giant"] == "50.0% [45.0%, 55.0%]"
    assert frame.loc["deep-REMAP", "called giant"] == "30.0% [25.0%, 35.0%]; fold models [20.0%, 40.0%]"
    assert frame.loc["deep-REMAP", "seeds"] == 5


def test_paired_frame_and_sentence_call_an_effect_only_when_the_interval_excludes_zero(result):
    frame = studyreport.paired_frame(result, "cv_dwarfs").set_index("label")
    assert frame.loc["teff", "excludes_zero"] and not frame.loc["logg", "excludes_zero"]
    assert "+10 K [+2, +18] over 5 paired seeds: an effect" in studyreport.effect_sentence(
        result, "MSE regression CNN", label="teff")
    assert "no detectable difference at this budget" in studyreport.effect_sentence(
        result, "MSE regression CNN", label="logg")
    assert "no paired" in studyreport.effect_sentence(result, "deep-REMAP")
    assert studyreport.effect_sentence(result, "MSE regression CNN", "giants", "accuracy", "all") == (
        "MSE regression CNN − deep-REMAP, share called giant on MILES FGK giant candidates: +20.0 points "
        "[+10.0, +30.0] over 5 paired seeds: an effect (the interval excludes zero)")
    # the share called giant has no label: the default label must not hide it (notebook 6 asks so)
    assert studyreport.effect_sentence(result, "MSE regression CNN", "giants", "accuracy") == \
        studyreport.effect_sentence(result, "MSE regression CNN", "giants", "accuracy", "all")


def test_a_sentence_can_compare_with_another_row_than_the_rows_own_reference(result):
    result = {**result, "comparisons": [{"row": "deep-REMAP", "reference": "MSE regression CNN",
                                         "cv_dwarfs": {"seeds": [0, 1, 2], "teff": _diff(-10.0, -18.0, -2.0)}}]}
    assert studyreport.effect_sentence(result, "deep-REMAP", label="teff", reference="MSE regression CNN") == (
        "deep-REMAP − MSE regression CNN, σ of T<sub>eff</sub> on cross-validated MILES FGK dwarfs: -10 K "
        "[-18, -2] over 3 paired seeds: an effect (the interval excludes zero)")
    assert "no paired" in studyreport.effect_sentence(result, "deep-REMAP", "giants", reference="MSE regression CNN")
    assert "no paired" in studyreport.effect_sentence(result, "MSE regression CNN", reference="deep-REMAP")
    # without a reference, the row's own pairing as before
    assert "− deep-REMAP" in studyreport.effect_sentence(result, "MSE regression CNN", label="teff")


def test_unknown_rows_are_named(result):
    with pytest.raises(KeyError, match="no study row 'nope'"):
        studyreport.summary_frame(result, rows=["nope"])
    # a row the study has but this (older) aggregate lacks is left out
    assert list(studyreport.summary_frame(result, rows=["The Cannon", "deep-REMAP"]).index) == ["deep-REMAP"]


def test_headline_puts_the_paper_first_and_each_row_with_its_interval(result):
    text = studyreport.headline_markdown(result)
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert lines[1].startswith("| the paper") and "| 75 | 0.12 | 0.08 |" in lines[1]
    assert lines[2] == ("| deep-REMAP | 5 | 90 [70, 110] | 0.20 [0.15, 0.25] | 0.10 [0.08, 0.12] "
                        "| 150 [130, 170] | 0.20 [0.15, 0.25] | 0.10 [0.08, 0.12] | 30% |")
    assert not any("no SWA" in ln for ln in lines)  # no complete seed, no line


def test_forest_plot_draws_one_panel_per_label_and_refuses_an_empty_comparison(result):
    axes = studyreport.forest_plot(result, "cv_dwarfs")
    assert len(axes) == 3 and [t.get_text() for t in axes[0].get_yticklabels()] == ["MSE regression CNN"]
    with pytest.raises(ValueError, match="no paired sigma differences on giants"):
        studyreport.forest_plot(result, "giants")
    # a variant named after its reference shows what it adds; one with another reference says which
    mse = result["rows"][1]
    variant = {**mse, "name": "MSE regression CNN, wider", "reference": mse["name"],
               "paired": {**mse["paired"], "reference": mse["name"]}}
    other = {**mse, "name": "deep-REMAP, tweaked"}
    axes = studyreport.forest_plot({**result, "rows": [*result["rows"], variant, other]}, "cv_dwarfs")
    assert [t.get_text() for t in axes[0].get_yticklabels()] == [
        "MSE regression CNN", "… wider (vs MSE regression CNN)", "… tweaked"]
    # the same variant on noisier copies, against its reference at that S/N
    noisy = {**mse, "name": "deep-REMAP, tweaked at S/N 20", "reference": "deep-REMAP at S/N 20",
             "paired": {**mse["paired"], "reference": "deep-REMAP at S/N 20"}}
    axes = studyreport.forest_plot({**result, "rows": [*result["rows"], other, noisy]}, "cv_dwarfs")
    assert [t.get_text() for t in axes[0].get_yticklabels()][-1] == "… tweaked at S/N 20"


def test_coverage_plot_draws_each_rows_coverage_with_its_interval_and_the_goal(result):
    axes = studyreport.coverage_plot(result, ["deep-REMAP", "MSE regression CNN", "no SWA"])
    assert axes.shape == (2, 2)
    ax = axes[0][0]
    bars = [c for c in ax.containers]
    assert len(bars) == 2  # the row without seeds draws nothing
    y = bars[0].lines[0].get_ydata()
    assert list(y) == [0.5, 0.5, 0.5]  # the three labels' 68 % coverage
    band = ax.patches[0].get_window_extent()  # the goal, 0.68 ± 0.05, in data coordinates below
    low, high = ax.transData.inverted().transform([[0, band.y0], [0, band.y1]])[:, 1]
    assert (low, high) == (pytest.approx(0.63), pytest.approx(0.73)) and "68 % coverage" in ax.get_title()
    assert axes[1][1].get_title().startswith("95 % coverage, MILES FGK giant")


def test_markdown_tables_give_n_and_seeds_per_row(result):
    text = studyreport.markdown_tables(result, tables=("calibration_stars",), metrics=("sigma",))
    assert "### the 30 calibration stars" in text
    assert "| deep-REMAP | 30 | 5 | 90 ± 1.0 [70, 110] |" in text


def test_read_study_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="remap study aggregate"):
        studyreport.read_study(tmp_path / "study.json")
    (tmp_path / "study.json").write_text(json.dumps({"rows": []}))
    assert studyreport.read_study(tmp_path / "study.json") == {"rows": []}


def test_budgets_markdown_names_each_budgets_rows_and_the_compute(result):
    result = {**result, "budgets": {"default": {"epochs": 60}, "reduced": {"pretrain_epochs": 20},
                                    "networks": {"paper": {"stage_channels": [32, 64], "blocks_per_stage": 3}}},
              "compute": {"runs": 3, "cpu_hours": 1.25, "wall_hours": 2.0, "devices": ["cpu"], "resumed_runs": 0,
                          "by_kind": {"ensemble": {"runs": 3, "cpu_hours": 1.25, "wall_hours": 2.0}}}}
    for row in result["rows"]:
        row["budget"] = "default"
    text = studyreport.budgets_markdown(result)
    assert "| default | epochs = 60 |" in text and "| reduced | pretrain_epochs = 20 |" in text
    assert "| reduced, paper network | stage_channels = [32, 64], blocks_per_stage = 3 |" in text
    assert "| default | deep-REMAP, MSE regression CNN, no SWA |" in text
    assert "**3 runs, 1.2 CPU hours**" in text and "ensemble: 3 runs, 1.25 h" in text


@pytest.mark.parametrize("recipe", ["giant distillation + noise-matched augmentation",
                                    "giant distillation + noise-matched augmentation, Teff and log g only"])
def test_goals_table_judges_means_intervals_and_paired_differences(result, recipe, monkeypatch):
    from remap_lib.evaluation import studyrows
    from remap_lib.evaluation.studyrows import CONFORMAL, NOISE_DISTILL_HELD_OUT

    SHIPPED_ROW = recipe  # noqa: N806 (the test stands in for studyrows.SHIPPED_ROW)
    monkeypatch.setattr(studyrows, "SHIPPED_ROW", recipe)
    monkeypatch.setattr(studyrows, "PEER_COMPARISONS", ((recipe, "MSE regression CNN"), (recipe, "The Cannon")))
    shipped = {"name": SHIPPED_ROW, "n_seeds": 5, "cv_dwarfs": _table(355, 5, (70.0, 60.0, 80.0), accuracy=0.96),
               "calibration_stars": _table(30, 5, (90.0, 70.0, 110.0)),
               "giants": _table(371, 5, (130.0, 110.0, 150.0), accuracy=0.94)}
    conformal = {**shipped, "name": f"{SHIPPED_ROW}, {CONFORMAL}"}
    conformal["cv_dwarfs"] = {**shipped["cv_dwarfs"], "teff": {**shipped["cv_dwarfs"]["teff"], "coverage68": 0.70,
                                                                "coverage68_ci95": [0.65, 0.75]}}
    held = {"name": NOISE_DISTILL_HELD_OUT, "giants": _table(371, 5, (140.0, 120.0, 160.0), accuracy=0.97)}
    result = {**result, "rows": [*result["rows"], shipped, conformal, held],
              "comparisons": [{"row": SHIPPED_ROW, "reference": "MSE regression CNN",
                               "cv_dwarfs": {"teff": _diff(-20.0, -30.0, -10.0), "logg": _diff(-0.01, -0.03, 0.01)}}]}
    rows = {line.split(" | ")[0].strip("| "): line for line in studyreport.goals_markdown(result).splitlines()
            if line.startswith("| ")}
    assert rows["σ T<sub>eff</sub>, cross-validated MILES FGK dwarfs"].endswith("| 70 [60, 80] | yes |")
    assert rows["σ T<sub>eff</sub>, the 30 calibration stars"].endswith("| no |")
    assert rows["σ T<sub>eff</sub>, MILES FGK giant candidates"].endswith("| ≤ 120 K | 130 [110, 150] | no |")
    assert rows["σ T<sub>eff</sub> − MSE regression CNN's, cross-validated dwarfs (paired)"].endswith(
        "| interval < 0 | -20 [-30, -10] | yes |")
    assert rows["σ log g − MSE regression CNN's, cross-validated dwarfs (paired)"].endswith("| no |")
    # a peer of PEER_COMPARISONS the aggregate has no comparison with is named, not dropped
    assert "not in the aggregate: rerun `remap study aggregate`" in rows[
        "σ T<sub>eff</sub> − The Cannon's, cross-validated dwarfs (paired)"]
    assert rows["giants called giant (log g < 3.5)"].endswith("| 94.0 % [89.0 %, 99.0 %] | no |")
    # the held-out experiment distils all three labels: named beside a recipe that distils fewer
    held_out_row = "" if recipe == studyrows.NOISE_DISTILL else f" (row *{NOISE_DISTILL_HELD_OUT}*)"
    assert rows[f"giants called giant, networks that never saw them{held_out_row}"].endswith("| yes |")
    assert rows["dwarfs that stay dwarfs"].endswith("| yes |")
    # coverage is read from the conformally scaled row: 0.70 is within 0.68 ± 0.05, 0.5 is not
    coverage = rows["68 % coverage T<sub>eff</sub>, cross-validated MILES FGK dwarfs"]
    assert coverage.endswith("| 0.70 [0.65, 0.75] | yes |")
    assert rows["68 % coverage log g, cross-validated MILES FGK dwarfs"].endswith("| no |")
    with pytest.raises(KeyError, match="no complete seed"):
        studyreport.goals_markdown(result, row="no SWA")
    assert "Not measured by the study: the interval ECE (≤ 0.03) and the synthetic held-out nodes" in \
        studyreport.goals_markdown(result)
    # with the held-out node report, the synthetic goals join the table with their intervals over nodes
    net = {n: {"sigma": s, "sigma_ci95": [0.8 * s, 1.2 * s], "mad": 0.2 * s, "mad_ci95": [0.1 * s, 0.3 * s]}
           for n, s in (("teff", 131.0), ("logg", 0.10), ("feh", 0.05))}
    text = studyreport.goals_markdown(result, nodes={"snr": 50.0, "network": net})
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["σ T<sub>eff</sub>, the grid's held-out nodes at S/N 50 (pretrained network)"].endswith(
        "| ≤ 60 K | 131 [105, 157] | no |")
    assert rows["σ log g, the grid's held-out nodes at S/N 50 (pretrained network)"].endswith(
        "| ≤ 0.12 dex | 0.100 [0.080, 0.120] | yes |")
    assert rows["MAD T<sub>eff</sub>, the grid's held-out nodes at S/N 50 (pretrained network)"].endswith(
        "| ≤ 25 K | 26 [13, 39] | no |")
    assert "Not measured by the study: the interval ECE (≤ 0.03)." in text


def test_a_value_that_rounds_to_zero_prints_without_a_sign():
    assert studyreport._fmt(-0.0004, 3) == "0.000"
    assert studyreport._fmt(-0.4, 0) == "0"
    assert studyreport._fmt(-0.0006, 3) == "-0.001"
    assert studyreport._fmt(None, 2) == "–"


def test_the_headline_shows_the_recipe_remap_ships():
    from remap_lib.evaluation.studyrows import ROW_BY_NAME, SHIPPED_ROW

    assert SHIPPED_ROW in studyreport.HEADLINE_ROWS
    assert all(name in ROW_BY_NAME for name in studyreport.HEADLINE_ROWS)


def test_effect_sentences_give_the_share_then_each_metric_and_label(result):
    lines = studyreport.effect_sentences(result, "MSE regression CNN", "cv_dwarfs", metrics=("sigma",))
    assert len(lines) == 4
    assert lines[0] == studyreport.effect_sentence(result, "MSE regression CNN", "cv_dwarfs", "accuracy")
    assert lines[1] == studyreport.effect_sentence(result, "MSE regression CNN", "cv_dwarfs", "sigma", "teff")
    assert lines[3] == studyreport.effect_sentence(result, "MSE regression CNN", "cv_dwarfs", "sigma", "feh")
