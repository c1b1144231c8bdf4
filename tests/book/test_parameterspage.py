"""The notebooks' parameters and exercises, read from their cells for the book's pages."""

from __future__ import annotations

import nbformat
import pytest
from papermill.translators import PythonTranslator

from remap_lib.book import parameterspage
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
    params = parameterspage.read_parameters(name)
    assert params, f"{name}: empty parameters cell"
    assert parameterspage.parameter_problems(name, params) == []


@pytest.mark.parametrize("name", list_notebooks())
def test_papermill_reads_the_same_parameters_and_help(name):
    # `papermill --help-notebook` shows these comments too; an "=" inside a comment would hide one
    ours = [(p.name, p.meaning) for p in parameterspage.read_parameters(name)]
    cell = parameterspage.parameters_cell(parameterspage.NOTEBOOK_DIR / f"{name}.ipynb")
    theirs = [(p.name, p.help) for p in PythonTranslator.inspect(nbformat.v4.new_code_cell(cell))]
    assert theirs == ours


def test_parse_parameters_reads_values_and_inline_comments():
    params = parameterspage.parse_parameters('profile = "default"  # which profile\nepochs = None  # passes\n'
                                        'sizes = [\n    8,\n    16,  # widths\n]\nnothing = 3\n')
    assert [(p.name, p.value, p.meaning) for p in params] == [
        ("profile", "default", "which profile"), ("epochs", None, "passes"), ("sizes", [8, 16], "widths"),
        ("nothing", 3, "")]


@pytest.mark.parametrize("source, match", [("x = f(1)  # call", "line 1: x is not a literal"),
                                           ("import os", "line 1: expected `name = value"),
                                           ("a = b = 1", "line 1: expected")])
def test_parse_parameters_rejects_what_is_not_a_plain_assignment(source, match):
    with pytest.raises(ValueError, match=match):
        parameterspage.parse_parameters(source)


def test_a_parameter_without_meaning_is_a_problem(tmp_path):
    _notebook(tmp_path / "09_new.ipynb", 'profile = "default"  # the profile\nepochs = None\nseed = 0  # seed\n')
    params = parameterspage.read_parameters("09_new", tmp_path)
    problems = parameterspage.parameter_problems("09_new", params, {}, tmp_path)
    assert problems == ["09_new: parameter 'epochs' has no meaning (add `  # ...` to its line)"]


def test_a_profile_entry_the_cell_lacks_is_a_problem(tmp_path):
    _notebook(tmp_path / "09_new.ipynb", 'profile = "default"  # the profile\nepochs = None  # passes\n',
              code='p = profiles.resolve("newstep", profile, epochs=epochs)')
    profiles = {"newstep": {"smoke": {"epochs": 1, "lr": 0.1}, "default": {"epochs": 5, "lr": 0.1}}}
    problems = parameterspage.parameter_problems("09_new", parameterspage.read_parameters("09_new", tmp_path), profiles,
                                            tmp_path)
    assert problems == ["09_new: PROFILES['newstep']['smoke'] names 'lr', which the parameters cell lacks",
                        "09_new: PROFILES['newstep']['default'] names 'lr', which the parameters cell lacks"]


def test_missing_parameters_cell_is_an_error(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, str(tmp_path / "09_x.ipynb"))
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        parameterspage.read_parameters("09_x", tmp_path)


def test_profile_values_take_none_from_the_profile_and_keep_literals():
    params = parameterspage.read_parameters("02_pretrain")
    values = parameterspage.profile_values("02_pretrain", params)
    for prof in parameterspage.PROFILE_NAMES:
        assert values[prof]["profile"] == prof
        assert values[prof]["epochs"] == PROFILES["pretrain"][prof]["epochs"]
        assert values[prof]["seed"] == 0  # a literal in the cell: every profile runs with it
    holdout = parameterspage.profile_values("03_finetune", parameterspage.read_parameters("03_finetune"))
    assert all(v["holdout"] is None for v in holdout.values())  # None that no profile sets stays None


def test_parameters_page_covers_any_notebook_in_the_folder(tmp_path):
    _notebook(tmp_path / "09_extra.ipynb", 'profile = "default"  # the profile\nwidth = 3  # a | pipe\n')
    page = parameterspage.parameters_page(["09_extra"], tmp_path, profiles={}, toc_files=set())
    assert "## 09_extra" in page and "Notebook `09_extra`." in page  # not in the toc: no link
    assert "| `width` | `3` | `3` | `3` | a \\| pipe |" in page
    assert '| `profile` | `\'smoke\'` | `\'default\'` | `\'paper\'` | the profile |' in page


def test_parameters_page_of_the_book_lists_every_parameter():
    page = parameterspage.parameters_page(toc_files={"book/notebooks/02_pretrain"})
    for name in list_notebooks():
        assert f"## {name}" in page
        for p in parameterspage.read_parameters(name):
            assert f"| `{p.name}` |" in page
    assert "{doc}`02_pretrain <../notebooks/02_pretrain>`" in page
    assert "`[16, 32, 64, 128]`" in page  # the default profile's 02_pretrain stage_channels
    assert "no meaning given" not in page


# --------------------------------------------------------------------------------------------- exercises
def test_exercises_are_the_numbered_try_this_items(tmp_path):
    _notebook(tmp_path / "09_x.ipynb", 'profile = "default"  # p\n',
              "## Try this\n\n1. First, over\n   two lines.\n2. Second.\n\nNot an item.\n")
    assert parameterspage.exercises("09_x", tmp_path) == ["First, over two lines.", "Second."]
    fragment = parameterspage.exercises_fragment(["09_x"], tmp_path, toc_files=set())
    assert "**`09_x`** — 2 exercises" in fragment and "2. Second." in fragment


def test_every_teaching_notebook_has_exercises():
    counts = {name: len(parameterspage.exercises(name)) for name in list_notebooks()}
    assert all(counts[n] >= 2 for n in counts if n != "08_results"), counts
