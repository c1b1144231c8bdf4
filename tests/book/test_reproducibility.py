"""Where the book's numbers came from: measured run times, seeds, data hashes, packages, machines."""

from __future__ import annotations

import json

from remap_lib.book import reproducibility


# -------------------------------------------------------------------------------------------- run times
def _log(entries: dict, source=None) -> dict:
    log = {"notebooks": {n: {"profile": "smoke", "overrides": {}, "started": "2026-01-01T00:00:00Z", "wall_s": s,
                             "machine": {"cpu_model": "Test CPU", "nproc": 2, "load_average_start": [1.0, 0.5, 0.25]}}
                         for n, s in entries.items()}}
    if source:
        log["source"] = source
    return log


def test_course_times_reads_committed_logs_and_says_what_is_not_measured(tmp_path):
    (tmp_path / "smoke.json").write_text(json.dumps(_log({"01_a": 10.0, "02_b": 200.0}, "a test run")))
    (tmp_path / "default.json").write_text(json.dumps(_log({"01_a": 30.0})))
    text = reproducibility.course_times_fragment(["01_a", "02_b"], tmp_path)
    assert "| `01_a` | 10 s | 30 s | not measured | not measured |" in text
    assert "| `02_b` | 3.3 min | not measured | not measured | not measured |" in text
    assert "**3.5 min**" in text  # smoke: both notebooks
    assert "**30 s** (1 of 2 notebooks)" in text  # default: a lower bound
    assert "- `smoke`: a test run (Test CPU, 2 cores)." in text
    assert "- `paper`: not measured" in text
    assert "no time on a GPU has been measured" in text


def test_committed_run_times_say_where_they_come_from():
    # a notebook added since a measurement shows as "not measured" in the guide; it does not fail here
    logs = reproducibility.committed_run_times()
    assert {"smoke", "default"} <= set(logs), "results/run_times/{smoke,default}.json missing"
    for prof, log in logs.items():
        assert log.get("source"), f"results/run_times/{prof}.json does not say where its times come from"
        assert log["notebooks"] and all(e["profile"] == prof and e["wall_s"] > 0 for e in log["notebooks"].values())


# ------------------------------------------------------------------------------------- reproducibility
def test_reproducibility_page_shows_run_log_seeds_hashes_and_packages(tmp_path):
    log = _log({"01_data_prep": 12.5})
    log["notebooks"]["01_data_prep"]["overrides"] = {"seed": 7}
    (tmp_path / "run_log.json").write_text(json.dumps(log))
    page = reproducibility.reproducibility_page("smoke", tmp_path / "run_log.json")
    row = ("| `01_data_prep` | `smoke` | `seed=7` | 2026-01-01T00:00:00Z | 12 s | Test CPU, 2 cores | "
           "1.00 / 0.50 / 0.25 |")
    assert row in page
    assert "| `02_pretrain` | not run |" in page
    assert "| `01_data_prep` | `7` |" in page  # the seed this run used
    assert "| `02_pretrain` | `0` |" in page
    assert "sme_marcs_ges_r11000.h5" in page and "matches" in page
    assert "b8478bb24c32fe736fa6a2881805458719281862313838f8b032f3c10527ff34" in page  # MILES wheel
    assert "| `torch` | 2.13.0 |" in page
    assert "cpu_model" in page


def test_reproducibility_page_without_run_log_says_so(tmp_path):
    page = reproducibility.reproducibility_page("smoke", tmp_path / "none.json")
    assert "No run log was found" in page


def test_across_machines_section_tabulates_the_builds_against_the_study(tmp_path):
    assert "does not exist yet" in "\n".join(reproducibility.across_machines_section(tmp_path / "none.json"))
    sig = {"teff": 89.3, "logg": 0.221, "feh": 0.125}
    spread = {"generated": "2026-11-29T00:00:00Z",
              "builds": {"AMD": {"calibration_sigma": sig, "giants_called_giant": 0.62},
                         "Intel": {"calibration_sigma": {**sig, "teff": 87.1}, "giants_called_giant": 0.56}},
              "comparisons": {"Intel vs AMD": {"different": 425, "values": 730, "sections_that_differ": ["giants"]}},
              "study": {"row": "deep-REMAP", "table": "calibration_stars", "n_seeds": 5,
                        **{k: {"mean": v, "ci95": [v / 2, v * 2]} for k, v in sig.items()},
                        "giants_called_giant": {"mean": 0.6, "ci95": [0.5, 0.7], "ci95_models": [0.4, 0.75],
                                                "largest_seed_range": 0.04, "model_means": [0.2, 0.45],
                                                "single_models": [0.15, 0.48]}},
              "range": {"giants_called_giant": {"min": 0.56, "max": 0.62, "difference": 0.06}},
              "inside": {"teff": True, "giants_called_giant": False},
              "covered": {"teff": True, "giants_called_giant": False},
              "covered_by": {"teff": "ci95", "giants_called_giant": "single_models"},
              "rerun_same_machine": {"records": 10, "identical_predictions": 10}}
    (tmp_path / "spread.json").write_text(json.dumps(spread))
    text = "\n".join(reproducibility.across_machines_section(tmp_path / "spread.json"))
    assert "| Intel | 87.1 | 0.221 | 0.125 | 56.0% |" in text
    assert "**425 of 730** values" in text and "10 of 10 study records" in text
    assert "half the width of the study's 95 % interval for: teff; by more for: **giants_called_giant**." in text
    assert ("every build lies inside the study's interval (stars and seeds) for: teff; "
            "outside for: giants_called_giant." in text)
    assert ("the builds differ by 6.0 points. In the study, no fold model's share moved by more than 4.0 points "
            "between fine-tuning seeds, while the five fold models, fine-tuned on different dwarfs, range from 20.0% "
            "to 45.0%" in text and "The machine moved it more than any seed did" in text)
    assert ("is [50.0%, 70.0%] over stars and seeds, [40.0%, 75.0%] when the fold models are resampled too; "
            "single models (every fold and seed) give [15.0%, 48.0%]." in text)
