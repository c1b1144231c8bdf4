"""remap_lib.evaluation.synthgap on hand-computed toy cases: bias, σ, coverage, the goal, and the book page."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from remap_lib.evaluation import synthgap
from remap_lib.evaluation.synthgap import book_page, evaluate, goal, label_stats, shifted_rows

TRUTH = np.array([[5000.0, 4.50, 0.00], [5000.0, 4.50, 0.00], [5000.0, 2.50, -1.00]])
PRED = np.array([[5100.0, 4.40, 0.05], [4900.0, 4.60, 0.05], [5300.0, 2.50, -0.70]])


def test_label_stats_by_hand():
    p16, p84 = PRED - [150.0, 0.05, 0.1], PRED + [150.0, 0.05, 0.1]
    s = label_stats(PRED, p16, p84, TRUTH)
    # Teff errors 100, -100, 300: mean 100, median 100, sample std sqrt((0 + 200² + 200²)/2) = 200
    assert s["teff"]["bias"] == pytest.approx(100.0) and s["teff"]["median_offset"] == pytest.approx(100.0)
    assert s["teff"]["sigma"] == pytest.approx(200.0)
    assert s["teff"]["coverage68"] == pytest.approx(2 / 3)  # the 300 K miss is outside ±150 K
    # log g errors -0.1, 0.1, 0: none inside ±0.05 but the last
    assert s["logg"]["bias"] == pytest.approx(0.0, abs=1e-12) and s["logg"]["coverage68"] == pytest.approx(1 / 3)
    assert s["feh"]["bias"] == pytest.approx((0.05 + 0.05 + 0.3) / 3)
    assert s["feh"]["n"] == 3


def test_nan_rows_are_left_out():
    pred = PRED.copy()
    pred[2] = np.nan
    s = label_stats(pred, pred - 1, pred + 1, TRUTH)
    assert s["teff"]["n"] == 2 and s["teff"]["bias"] == pytest.approx(0.0)


def test_shifted_rows_and_goal():
    # row 0: |ΔTeff| = 100 is not beyond 100 K; log g 0.1 ≤ 0.15; [Fe/H] 0.05: not shifted
    # row 1: same, not shifted; row 2: 300 K and 0.3 dex: shifted
    np.testing.assert_array_equal(shifted_rows(PRED, TRUTH), [False, False, True])
    stats = label_stats(PRED, PRED, PRED, TRUTH)
    g = goal(stats, PRED, TRUTH, [False, True, True])
    assert g["bias_within_limits"] == {"teff": True, "logg": True, "feh": False}  # [Fe/H] bias 0.133 > 0.10
    assert g["n_shifted"] == 1 and g["shifted_caught"] == 1.0 and g["false_flags_unshifted"] == 0.5
    assert g["catch_met"] and not g["bias_met"] and not g["met"]  # the one shifted spectrum is flagged
    missed = goal(stats, PRED, TRUTH, [True, True, False])
    assert missed["shifted_caught"] == 0.0 and not missed["catch_met"]
    small = PRED.copy()
    small[2] = TRUTH[2] + [50.0, 0.0, 0.0]  # nothing shifted: the catch half holds by default
    g = goal(label_stats(small, small, small, TRUTH), small, TRUTH, [False, False, False])
    assert g["n_shifted"] == 0 and g["shifted_caught"] is None and g["bias_met"] and g["met"]


def test_evaluate_splits_dwarfs_and_giants():
    out = evaluate(PRED, PRED - 1, PRED + 1, TRUTH, [False, False, True])
    assert out["dwarfs"]["teff"]["n"] == 2 and out["giants"]["teff"]["n"] == 1
    assert out["ood_rate"] == pytest.approx(1 / 3)
    assert out["ood_rate_dwarfs"] == 0.0 and out["ood_rate_giants"] == 1.0
    assert out["goal_dwarfs"]["n_shifted"] == 0


def test_book_page_renders_the_report(tmp_path):
    nets = {}
    for name in ("pretrained", "fine-tuned (shipped)"):
        ood = [False, False, True]
        nets[name] = {**evaluate(PRED, PRED - 150, PRED + 150, TRUTH, ood),
                      "rows": {"median": PRED.tolist(), "out_of_domain": ood}}
    report = {"testset": {"file": "toy.h5", "n": 3, "labels": {"seed": 7}}, "limits": {"teff": 100.0, "logg": 0.15,
              "feh": 0.1}, "catch_goal": 0.9, "truth": TRUTH.tolist(), "networks": nets}
    res = tmp_path / "results"
    res.mkdir()
    (res / "synthetic_gap.json").write_text(json.dumps(report))
    page = book_page(tmp_path / "out", res)
    assert "| pretrained | all (3) | T<sub>eff</sub> (K) | +100 | +100 | 200 | 0.67 |" in page
    assert "| fine-tuned (shipped) | 33% | 0% | 100% | 1 | 100% | 0% | **not met** | met |" in page
    assert "seed 7" in page and "{cite}`castelli2003`" in page
    assert (tmp_path / "out" / "figures" / "synthetic_gap.png").stat().st_size > 1000
    assert "is missing" in book_page(tmp_path / "out", tmp_path)


def test_the_reports_live_in_the_repository_results_folder():
    from remap_lib.paths import REPO_ROOT, RESULTS_DIR

    assert synthgap.RESULTS == RESULTS_DIR == REPO_ROOT / "results"
    assert (synthgap.RESULTS / "ood.json").is_file()  # a committed report, where the book pages look


def test_main_measures_variants_named_on_the_command_line(tmp_path, monkeypatch):
    seen = {}
    base = {"pretrained": Path("a.pt"), "fine-tuned (shipped)": Path("b.pt")}
    monkeypatch.setattr(synthgap, "networks", lambda: dict(base))
    monkeypatch.setattr(synthgap, "measure", lambda testset, models: seen.update(models) or {"networks": {}})
    synthgap.main(["--out", str(tmp_path / "r.json"), "--also", "mix=c.pt"])
    assert seen == {**base, "mix": Path("c.pt")}
    for bad in ("no-equals-sign", "pretrained=d.pt"):
        with pytest.raises(SystemExit):
            synthgap.main(["--out", str(tmp_path / "r.json"), "--also", bad])


def test_bias_frame_reads_each_networks_bias_and_sigma(tmp_path):
    report = {"networks": {"a": evaluate(PRED, PRED - 1, PRED + 1, TRUTH, [False] * 3),
                           "b": evaluate(TRUTH, TRUTH - 1, TRUTH + 1, TRUTH, [False] * 3)}}
    (tmp_path / "r.json").write_text(json.dumps(report))
    frame = synthgap.bias_frame(synthgap.read_report(tmp_path / "r.json"), "dwarfs")
    assert list(frame.index) == ["a", "b"]
    # the two dwarfs err by +100 and -100 K
    assert frame.loc["a", "bias teff"] == pytest.approx(0.0)
    assert frame.loc["a", "σ teff"] == pytest.approx(100 * 2 ** 0.5)
    assert frame.loc["a", "bias feh"] == pytest.approx(0.05) and (frame.loc["b"] == 0).all()
    assert synthgap.read_report(tmp_path / "missing.json") is None
