"""The generated book pages: parameters from the notebooks' cells, run times, reproducibility, performance."""

from __future__ import annotations

import json

import nbformat
import pytest
from papermill.translators import PythonTranslator

from remap_lib.book import bookpages
from remap_lib.book.notebooks import list_notebooks
from remap_lib.training.profiles import PROFILES


def _notebook(path, parameters: str, try_this: str | None = None, code: str | None = None):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A notebook"), cell]
    if code:
        nb.cells.append(nbformat.v4.new_code_cell(code))
    if try_this:
        nb.cells.append(nbformat.v4.new_markdown_cell(try_this))
    nbformat.write(nb, str(path))
    return path


# -------------------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name", list_notebooks())
def test_every_notebook_parameter_has_a_meaning_and_every_profile_entry_a_parameter(name):
    params = bookpages.read_parameters(name)
    assert params, f"{name}: empty parameters cell"
    assert bookpages.parameter_problems(name, params) == []


@pytest.mark.parametrize("name", list_notebooks())
def test_papermill_reads_the_same_parameters_and_help(name):
    # `papermill --help-notebook` shows these comments too; an "=" inside a comment would hide one
    ours = [(p.name, p.meaning) for p in bookpages.read_parameters(name)]
    cell = bookpages.parameters_cell(bookpages.NOTEBOOK_DIR / f"{name}.ipynb")
    theirs = [(p.name, p.help) for p in PythonTranslator.inspect(nbformat.v4.new_code_cell(cell))]
    assert theirs == ours


def test_parse_parameters_reads_values_and_inline_comments():
    params = bookpages.parse_parameters('profile = "default"  # which profile\nepochs = None  # passes\n'
                                        'sizes = [\n    8,\n    16,  # widths\n]\nnothing = 3\n')
    assert [(p.name, p.value, p.meaning) for p in params] == [
        ("profile", "default", "which profile"), ("epochs", None, "passes"), ("sizes", [8, 16], "widths"),
        ("nothing", 3, "")]


@pytest.mark.parametrize("source, match", [("x = f(1)  # call", "line 1: x is not a literal"),
                                           ("import os", "line 1: expected `name = value"),
                                           ("a = b = 1", "line 1: expected")])
def test_parse_parameters_rejects_what_is_not_a_plain_assignment(source, match):
    with pytest.raises(ValueError, match=match):
        bookpages.parse_parameters(source)


def test_a_parameter_without_meaning_is_a_problem(tmp_path):
    _notebook(tmp_path / "09_new.ipynb", 'profile = "default"  # the profile\nepochs = None\nseed = 0  # seed\n')
    problems = bookpages.parameter_problems("09_new", bookpages.read_parameters("09_new", tmp_path), {}, tmp_path)
    assert problems == ["09_new: parameter 'epochs' has no meaning (add `  # ...` to its line)"]


def test_a_profile_entry_the_cell_lacks_is_a_problem(tmp_path):
    _notebook(tmp_path / "09_new.ipynb", 'profile = "default"  # the profile\nepochs = None  # passes\n',
              code='p = profiles.resolve("newstep", profile, epochs=epochs)')
    profiles = {"newstep": {"smoke": {"epochs": 1, "lr": 0.1}, "default": {"epochs": 5, "lr": 0.1}}}
    problems = bookpages.parameter_problems("09_new", bookpages.read_parameters("09_new", tmp_path), profiles,
                                            tmp_path)
    assert problems == ["09_new: PROFILES['newstep']['smoke'] names 'lr', which the parameters cell lacks",
                        "09_new: PROFILES['newstep']['default'] names 'lr', which the parameters cell lacks"]


def test_missing_parameters_cell_is_an_error(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, str(tmp_path / "09_x.ipynb"))
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        bookpages.read_parameters("09_x", tmp_path)


def test_profile_values_take_none_from_the_profile_and_keep_literals():
    params = bookpages.read_parameters("02_pretrain")
    values = bookpages.profile_values("02_pretrain", params)
    for prof in bookpages.PROFILE_NAMES:
        assert values[prof]["profile"] == prof
        assert values[prof]["epochs"] == PROFILES["pretrain"][prof]["epochs"]
        assert values[prof]["seed"] == 0  # a literal in the cell: every profile runs with it
    holdout = bookpages.profile_values("03_finetune", bookpages.read_parameters("03_finetune"))
    assert all(v["holdout"] is None for v in holdout.values())  # None that no profile sets stays None


def test_parameters_page_covers_any_notebook_in_the_folder(tmp_path):
    _notebook(tmp_path / "09_extra.ipynb", 'profile = "default"  # the profile\nwidth = 3  # a | pipe\n')
    page = bookpages.parameters_page(["09_extra"], tmp_path, profiles={}, toc_files=set())
    assert "## 09_extra" in page and "Notebook `09_extra`." in page  # not in the toc: no link
    assert "| `width` | `3` | `3` | `3` | a \\| pipe |" in page
    assert '| `profile` | `\'smoke\'` | `\'default\'` | `\'paper\'` | the profile |' in page


def test_parameters_page_of_the_book_lists_every_parameter():
    page = bookpages.parameters_page(toc_files={"book/notebooks/02_pretrain"})
    for name in list_notebooks():
        assert f"## {name}" in page
        for p in bookpages.read_parameters(name):
            assert f"| `{p.name}` |" in page
    assert "{doc}`02_pretrain <../notebooks/02_pretrain>`" in page
    assert "`[16, 32, 64, 128]`" in page  # the default profile's 02_pretrain stage_channels
    assert "no meaning given" not in page


# --------------------------------------------------------------------------------------------- exercises
def test_exercises_are_the_numbered_try_this_items(tmp_path):
    _notebook(tmp_path / "09_x.ipynb", 'profile = "default"  # p\n',
              "## Try this\n\n1. First, over\n   two lines.\n2. Second.\n\nNot an item.\n")
    assert bookpages.exercises("09_x", tmp_path) == ["First, over two lines.", "Second."]
    fragment = bookpages.exercises_fragment(["09_x"], tmp_path, toc_files=set())
    assert "**`09_x`** — 2 exercises" in fragment and "2. Second." in fragment


def test_every_teaching_notebook_has_exercises():
    counts = {name: len(bookpages.exercises(name)) for name in list_notebooks()}
    assert all(counts[n] >= 2 for n in counts if n != "08_results"), counts


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
    text = bookpages.course_times_fragment(["01_a", "02_b"], tmp_path)
    assert "| `01_a` | 10 s | 30 s | not measured | not measured |" in text
    assert "| `02_b` | 3.3 min | not measured | not measured | not measured |" in text
    assert "**3.5 min**" in text  # smoke: both notebooks
    assert "**30 s** (1 of 2 notebooks)" in text  # default: a lower bound
    assert "- `smoke`: a test run (Test CPU, 2 cores)." in text
    assert "- `paper`: not measured" in text
    assert "no time on a GPU has been measured" in text


def test_committed_run_times_say_where_they_come_from():
    # a notebook added since a measurement shows as "not measured" in the guide; it does not fail here
    logs = bookpages.committed_run_times()
    assert {"smoke", "default"} <= set(logs), "results/run_times/{smoke,default}.json missing"
    for prof, log in logs.items():
        assert log.get("source"), f"results/run_times/{prof}.json does not say where its times come from"
        assert log["notebooks"] and all(e["profile"] == prof and e["wall_s"] > 0 for e in log["notebooks"].values())


# ------------------------------------------------------------------------------------- reproducibility
def test_reproducibility_page_shows_run_log_seeds_hashes_and_packages(tmp_path):
    log = _log({"01_data_prep": 12.5})
    log["notebooks"]["01_data_prep"]["overrides"] = {"seed": 7}
    (tmp_path / "run_log.json").write_text(json.dumps(log))
    page = bookpages.reproducibility_page("smoke", tmp_path / "run_log.json")
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
    page = bookpages.reproducibility_page("smoke", tmp_path / "none.json")
    assert "No run log was found" in page


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


def test_across_machines_section_tabulates_the_builds_against_the_study(tmp_path):
    assert "does not exist yet" in "\n".join(bookpages.across_machines_section(tmp_path / "none.json"))
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
    text = "\n".join(bookpages.across_machines_section(tmp_path / "spread.json"))
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
