"""remap_lib.book.robustnesspage: the robustness chapter shows the reports' numbers as given."""

import json

from remap_lib.book.robustnesspage import book_page
from remap_lib.constants import LABEL_NAMES


def test_book_page_renders_the_reports(tmp_path):
    """Every number on the page comes from the reports: a made-up set of three shows up as given."""
    res = tmp_path / "results"
    res.mkdir()
    roc = {"fpr": [0, 0, 1], "tpr": [0, 1, 1]}
    classes = {"calibration": {"n": 30, "flagged": 0.0, "flagged_before": 0.0},
               "A/B (Teff > 10000 K)": {"n": 7, "flagged": 6 / 7, "flagged_before": 0.0, "auc": 0.987, "roc": roc,
                                        "flagged_by_score": 3 / 7, "flagged_by_box": 5 / 7,
                                        "teff_outside_range": 1 / 7, "flagged_or_outside_range": 1.0},
               "giants": {"n": 10, "flagged": 0.0, "flagged_before": 0.0, "teff_outside_range": 0.2,
                          "teff_of_outside_range": [4050.0, 5000.0]},
               "nothing given": {"n": 0, "flagged": None, "flagged_before": None, "teff_outside_range": None}}
    box = {"features": "the three PMFs", "n_inside": 40, "n_outside": 7, "inside": ["calibration", "giants"],
           "rate": 0.05, "rate_counted_on": ["giants"], "c": 0.3, "auc": 0.912, "roc": roc,
           "replicates": [{"seed": 0, "outside_box": 0.8, "in_domain": 0.04},
                          {"seed": 1, "outside_box": 0.9, "in_domain": 0.06}]}
    (res / "ood.json").write_text(json.dumps({"rule": "score > 1.234", "classes": classes, "other_library": "none",
                                              "outside_box": {"n": 7, "flagged": 6 / 7,
                                                              "flagged_or_outside_range": 1.0},
                                              "in_domain": {"n": 40, "classes": ["calibration", "giants"],
                                                                     "flagged": 0.0, "flagged_or_outside_range": 0.05},
                                              "teff_range": [4000.0, 7000.0], "outside_mass": 0.5,
                                              "fitted_on": ["finetune", "validation", "giants"],
                                              "unlabelled": ["giants"], "box": box}))
    level = {n: {"coverage68": 0.5, "coverage68_widened": 0.71, "median_shift": -0.25} for n in LABEL_NAMES}
    (res / "noise_widening.json").write_text(json.dumps(
        {"roles": {"calibration": {"levels": [{"snr": 10.0, "measured_snr": 9.5, **level}]}}}))
    row = {n: 1.0 for n in LABEL_NAMES}
    curves = {"n": 30, "statistic": "median", "tilt": [{"shape": s, "amplitude": 0.3, **row} for s in ("linear",
                                                                                                       "quadratic")],
              "rv": [{"rv": 50.0, **row, "estimate_error_max": 12.0, "corrected": {"teff": 0.5}}],
              "snr": [{"snr": 10.0, **row}], "fwhm": [{"fwhm": 4.0, **row}], "undeclared_resolution": None}
    (res / "robustness.json").write_text(json.dumps(curves))
    cov = {"68": {n: 0.7 for n in LABEL_NAMES}, "95": {n: 0.9 for n in LABEL_NAMES}}
    own = {"68": {n: 0.6 for n in LABEL_NAMES}, "95": {n: 1.0 for n in LABEL_NAMES}}
    (res / "conformal.json").write_text(json.dumps(
        {"fit": {"factors": {"by_snr": {"snr": [58.1, 20.0, 10.0]}}},
         "measured": {"roles": {"calibration": {"n": 30, "after": own, "at_snr": {"20": {"after": cov}}}}}}))
    page = book_page(tmp_path / "out", res)
    assert "fitted at S/N 58.1, 20, 10" in page and "holding the factors of 10 below it" in page
    assert "| own | 0.60 | 0.60 | 0.60 | 1.00 | 1.00 | 1.00 |" in page
    assert "| 20 | 0.70 | 0.70 | 0.70 | 0.90 | 0.90 | 0.90 |" in page and "about ±0.09, one of 0.95 to ±0.04" in page
    assert "score > 1.234" in page and "| A/B (Teff > 10000 K) | 7 | 86% | 43% | 71% | 0% | 14% | 0.987 |" in page
    assert "| nothing given | 0 | – | – | – | – | – | – |" in page  # an empty class has no rates
    assert "86% of the 7 MILES stars outside the box" in page
    assert "Counting either flag, 100% of the stars outside the box" in page
    assert "5% of the 40 in-domain stars not fine-tuned on" in page
    assert "Of the 2 in-domain stars with `teff_outside_range`, 50% lie within 300 K" in page
    assert "second flux model, fitted on the giants with the labels the network gives them" in page
    assert "The novelty score is fitted on finetune, validation, giants only" in page
    assert "an L2 logistic regression on the three PMFs, fitted on the 40 stars inside the box (calibration, " \
           "giants) and the 7 outside it. Its regularisation strength (C = 0.3)" in page
    assert "over 2 fold assignments (seeds 0–1; the table is the first), `out_of_domain` flags 80%–90% of the " \
           "stars outside the box (mean 85%) and 4.0%–6.0% of the in-domain stars counted (mean 5.0%)" in page
    assert "Of the 1 stars outside the box left unflagged, 0 are at 7000-7500 K or 3700-4000 K" in page
    assert "at most 5% of the giants stars" in page and "of the 40 in-domain stars not fine-tuned on, 0.0%" in page
    assert "| 10.0 | 9.5 | 0.50 (0.71) |" in page and "-0.25 |" in page
    assert "within 12 km/s" in page and "within 0.5 K" in page
    assert {p.name for p in (tmp_path / "out" / "figures").iterdir()} == {
        "robustness_roc.png", "robustness_noise.png", "robustness_shifts.png"}
    (res / "ood.json").unlink()
    assert "`results/ood.json` is missing" in book_page(tmp_path / "out2", res)
