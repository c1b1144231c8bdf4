"""The generated book pages: the limitations' numbers, the headline, and writing every page."""

from __future__ import annotations

import json

import pytest

from remap_lib.book import bookpages


# ------------------------------------------------------------------------------------------ limitations
def test_limitations_numbers_come_from_the_metrics(monkeypatch):
    stats = {k: {"sigma": s, "mad": s / 2} for k, s in (("teff", 89.3), ("logg", 0.221), ("feh", 0.125))}
    ece = {k: {"ece_interval": 0.1} for k in ("teff", "logg", "feh")}
    metrics = {"validation": {"stats": stats, "paper": {"teff": 75.0, "logg": 0.12, "feh": 0.08}},
               "calibration": {"before_calibration": ece, "after_calibration": ece},
               "giants": {"logg_boundary": 3.5, "giant_candidate": {"fraction_called_giant": 0.62, "n": 371}},
               "ablations": {"retrained": [{"sigma_teff": 100.2}, {"sigma_teff": 108.4}]}}
    monkeypatch.setattr(bookpages, "load_metrics", lambda profile: metrics)
    text = bookpages.limitations_fragment("default")
    assert "| σ, this book | 89 | 0.22 | 0.12 |" in text
    assert "| σ, the paper (MARVELS, R ≈ 11000) | 75 | 0.12 | 0.08 |" in text
    assert "| calibration stars, after temperature scaling | 0.100 | 0.100 | 0.100 |" in text
    assert "**62%** of 371" in text
    assert "from 100 to 108 K across 2 rows" in text


def test_limitations_numbers_without_results(monkeypatch):
    monkeypatch.setattr(bookpages, "load_metrics", lambda profile: {})
    assert "No results for profile `paper` yet" in bookpages.limitations_fragment("paper")


# --------------------------------------------------------------------------------------------------- main
def test_main_writes_every_page(tmp_path, capsys):
    assert bookpages.main(["--out", str(tmp_path), "--profile", "smoke", "--run-log", str(tmp_path / "none")]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"parameters.md", "reproducibility.md", "performance.md", "course_times.md", "exercises.md",
            "limitations_numbers.md", "robustness.md", "figures"} <= names
    assert not list(tmp_path.glob(".*.part"))  # atomic writes leave no temporary files


def test_help():
    with pytest.raises(SystemExit) as exit_:
        bookpages.main(["--help"])
    assert exit_.value.code == 0


def test_headline_fragment_reads_the_study_or_says_how_to_make_it(tmp_path):
    missing = bookpages.headline_fragment(tmp_path / "study.json")
    assert "`remap study run` then `remap study aggregate`" in missing
    row = {"name": "deep-REMAP", "n_seeds": 5, "giants": {"accuracy": 0.9},
           **{t: {n: {"sigma": s, "ci95": [s - 1, s + 1]} for n, s in (("teff", 80.0), ("logg", 0.1), ("feh", 0.05))}
              for t in ("cv_dwarfs", "calibration_stars")}}
    (tmp_path / "study.json").write_text(json.dumps({"folds": {"k": 5, "n_dwarfs": 355, "n_giants": 371},
                                                     "rows": [row]}))
    text = bookpages.headline_fragment(tmp_path / "study.json")
    assert "| deep-REMAP | 5 | 80 [79, 81] | 0.10 [-0.90, 1.10] |" in text and "| 90% |" in text
