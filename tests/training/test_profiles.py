"""Parameter profiles: overrides, clear errors, and no drift between notebooks and the profile table."""

from __future__ import annotations

import ast

import nbformat
import pytest

from remap_lib.book.notebooks import NOTEBOOK_DIR, notebook_step
from remap_lib.nn.model import ModelConfig
from remap_lib.training.config import TrainConfig
from remap_lib.training.profiles import DIFFERENCES, PROFILES, STEP_DEFAULTS, resolve

#: Parameters a notebook takes that are deliberately not part of any profile (same value at every scale).
NOTEBOOK_ONLY = {"01_data_prep": {"seed"}, "02_pretrain": {"seed"}, "03_finetune": {"holdout", "seed"},
                 "06_giants": {"logg_boundary", "k_neighbours"}, "07_ablations": {"variants", "seed"},
                 "09_predict": {"model", "members", "seed"}}


def test_resolve_returns_the_profile():
    assert resolve("finetune", "smoke") == PROFILES["finetune"]["smoke"]
    assert resolve("pretrain", "paper")["epochs"] == 150


def test_resolve_applies_only_non_none_overrides():
    p = resolve("pretrain", "smoke", epochs=7, lr=None, stage_channels=[4, 8])
    assert p["epochs"] == 7 and p["stage_channels"] == [4, 8]
    assert p["lr"] == PROFILES["pretrain"]["smoke"]["lr"]  # None: taken from the profile
    assert PROFILES["pretrain"]["smoke"]["epochs"] == 2  # the table itself is not changed
    assert resolve("prepare", "default", test_fraction=0.0)["test_fraction"] == 0.0  # falsy but not None


def test_resolve_rejects_unknown_names_clearly():
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['epoch'\]; it takes .*'epochs'"):
        resolve("pretrain", "smoke", epoch=3)
    with pytest.raises(ValueError, match=r"unknown profile 'fast'.*\['default', 'paper', 'smoke'\]"):
        resolve("pretrain", "fast")
    with pytest.raises(ValueError, match=r"no profiles for step '09_extra'; known: \['ablations'"):
        resolve("09_extra", "smoke")
    with pytest.raises(ValueError, match="no profiles for step '03_finetune'"):
        resolve("03_finetune", "smoke")  # the library knows steps, not notebook file names
    with pytest.raises(ValueError, match="no parameter"):
        resolve("finetune", "smoke", holdout=["m0001"])  # a notebook-only parameter is not a profile value


def test_training_defaults_come_from_the_dataclasses():
    # a profile lists only its differences; what it does not list is the dataclass default
    pretrain = resolve("pretrain", "paper")
    assert pretrain["lr"] == TrainConfig.lr and pretrain["stage_channels"] == list(ModelConfig.stage_channels)
    for step, table in DIFFERENCES.items():
        defaults = STEP_DEFAULTS[step]()
        for profile, diff in table.items():
            assert set(diff) <= set(defaults), (step, profile)
            same = [k for k, v in diff.items() if defaults[k] == v]
            assert not same, f"{step}/{profile}: {same} equal the defaults"


def test_every_profile_of_a_step_has_the_same_parameters():
    for notebook, table in PROFILES.items():
        assert set(table) == {"smoke", "default", "paper"}, notebook
        keys = {name: set(values) for name, values in table.items()}
        assert keys["smoke"] == keys["default"] == keys["paper"], notebook


def _parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged 'parameters', found {len(cells)}"
    tree = ast.parse(cells[0].source)
    assigned = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, f"{path.name}: only `name = value` lines"
        assigned[node.targets[0].id] = ast.literal_eval(node.value)
    return nb, assigned


NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_parameters_match_profiles(path):
    nb, params = _parameters_cell(path)
    step = notebook_step(path)
    profile_keys = set(PROFILES.get(step, {}).get("default", {}))
    expected = {"profile"} | profile_keys | NOTEBOOK_ONLY.get(path.stem, set())
    assert set(params) == expected, f"{path.name}: parameters cell and PROFILES disagree"
    assert params["profile"] == "default" and params.get("seed", 0) == 0
    for key in profile_keys:  # None = "from the profile"; a value here would silently beat every profile
        assert params[key] is None, f"{path.name}: {key} should default to None"
    if profile_keys:
        # the notebook passes every profile parameter to resolve(), and nothing else
        calls = [node for cell in nb.cells if cell.cell_type == "code" and "resolve(" in cell.source
                 for node in ast.walk(ast.parse(cell.source))
                 if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "resolve"]
        assert len(calls) == 1, f"{path.name}: expected one profiles.resolve(...) call"
        call = calls[0]
        assert ast.literal_eval(call.args[0]) == step
        passed = {kw.arg: kw.value.id for kw in call.keywords}
        assert passed == {k: k for k in profile_keys}, f"{path.name}: resolve() arguments drifted"


def _names_read(nb) -> set[str]:
    """Every name the notebook's code cells other than ``parameters`` read."""
    return {node.id for cell in nb.cells
            if cell.cell_type == "code" and "parameters" not in cell.get("metadata", {}).get("tags", [])
            for node in ast.walk(ast.parse(cell.source))
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_parameter_is_used(path):
    # a parameter nothing reads (a `seed` "kept for a uniform interface") promises an effect it does not have
    nb, params = _parameters_cell(path)
    unused = set(params) - _names_read(nb)
    assert not unused, f"{path.name}: parameters {sorted(unused)} are never read"


def test_unused_parameter_check_catches_one():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("profile = 'default'\nseed = 0", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(profile)\nseed_name = 'seed'")])
    assert {"profile", "seed"} - _names_read(nb) == {"seed"}
