"""Comparing builds' metrics across machines, against the study's interval."""

import json

import pytest

from remap_lib.evaluation import machinespread as ms


def _metrics(teff, giants, extra=0.0):
    stats = {"teff": {"sigma": teff}, "logg": {"sigma": 0.2}, "feh": {"sigma": 0.1}}
    return {"validation": {"stats": stats, "peers": [1.0, 2.0 + extra]},
            "giants": {"giant_candidate": {"fraction_called_giant": giants}}}


STUDY = {"rows": [{"name": "deep-REMAP",
                   "calibration_stars": {"n_seeds": 5, **{n: {"sigma": s, "sigma_std": 0.5, "ci95": [lo, hi]}
                                                          for n, s, lo, hi in (("teff", 88.0, 70.0, 110.0),
                                                                               ("logg", 0.2, 0.15, 0.25),
                                                                               ("feh", 0.1, 0.11, 0.2))}},
                   "giants": {"accuracy": 0.6, "accuracy_std": 0.02, "accuracy_ci95": [0.58, 0.65]}}]}


def test_flatten_names_every_leaf_by_its_path():
    assert ms.flatten({"a": {"b": [1, {"c": 2}]}, "d": None}) == {"a.b.0": 1, "a.b.1.c": 2, "d": None}


def test_compare_counts_identical_and_different_values_key_by_key():
    c = ms.compare(_metrics(89.0, 0.62), _metrics(87.0, 0.62, extra=1.0))
    assert (c["values"], c["different"], c["identical"]) == (6, 2, 4)
    assert c["sections_that_differ"] == ["validation"]
    assert c["largest_relative_differences"]["validation.peers.1"]["relative"] == pytest.approx(0.5)
    assert ms.compare({"x": float("nan")}, {"x": float("nan")})["different"] == 0


def test_spread_says_whether_the_builds_lie_inside_the_study_interval_and_within_its_width():
    out = ms.spread({"amd": _metrics(89.3, 0.62), "intel": _metrics(87.1, 0.56)}, STUDY)
    assert out["range"]["teff"] == pytest.approx({"min": 87.1, "max": 89.3, "difference": 2.2})
    assert out["inside"] == {"teff": True, "logg": True, "feh": False, "giants_called_giant": False}
    # half-widths 20 K, 0.05, 0.045 and 0.035: only the giants' 0.06 spread is wider
    assert out["covered"] == {"teff": True, "logg": True, "feh": True, "giants_called_giant": False}
    assert out["study"]["n_seeds"] == 5
    with pytest.raises(ValueError, match="at least two builds"):
        ms.spread({"amd": _metrics(89.3, 0.62)})


def test_the_giants_spread_is_set_against_the_interval_that_resamples_fold_models():
    study = json.loads(json.dumps(STUDY))
    study["rows"][0]["giants"].update({"ci95_models": {"accuracy": [0.5, 0.7]},
                                       "accuracy_per_model": [[0.40, 0.20, 0.30], [0.44, 0.21, 0.30]]})
    out = ms.spread({"amd": _metrics(89.3, 0.62), "intel": _metrics(87.1, 0.56)}, study)
    giants = out["study"]["giants_called_giant"]
    assert giants["largest_seed_range"] == pytest.approx(0.04)
    assert giants["model_means"] == pytest.approx([0.205, 0.42])
    assert giants["single_models"] == pytest.approx([0.20, 0.44])
    assert out["covered"]["giants_called_giant"] and out["covered_by"]["giants_called_giant"] == "single_models"
    del study["rows"][0]["giants"]["accuracy_per_model"]
    out = ms.spread({"amd": _metrics(89.3, 0.62), "intel": _metrics(87.1, 0.56)}, study)
    assert out["covered"]["giants_called_giant"] and out["covered_by"]["giants_called_giant"] == "ci95_models"
    assert out["covered_by"]["teff"] == "ci95" and not out["inside"]["giants_called_giant"]


def test_command_writes_the_spread_and_names_an_unreadable_file(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_metrics(89.3, 0.62)))
    b.write_text(json.dumps(_metrics(87.1, 0.56)))
    out = tmp_path / "spread.json"
    assert ms.main([f"AMD={a}", f"Intel={b}", "--study", str(tmp_path / "none.json"), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["sources"] == {"AMD": str(a), "Intel": str(b)}
    assert "2 of 6 values differ" in capsys.readouterr().out
    assert ms.main([f"AMD={a}", f"X={tmp_path / 'missing.json'}", "--out", str(out)]) == 2
    assert "missing.json: cannot read the metrics file" in capsys.readouterr().err


def test_reruns_compare_the_predictions_of_records_with_the_same_name(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    for folder, value in ((first, 1.0), (second, 1.0)):
        (folder / "seed0_fold0.json").write_text(json.dumps({"predictions": {"x": [value]}, "wall_s": value}))
    (first / "seed0_fold1.json").write_text(json.dumps({"predictions": {"x": [1.0]}}))
    (second / "seed0_fold1.json").write_text(json.dumps({"predictions": {"x": [1.5]}}))
    (first / "seed1_fold0.json").write_text(json.dumps({"predictions": {}}))  # not rerun: not counted
    assert ms.compare_reruns(first, second) == {"records": 2, "identical_predictions": 1, "rows_compared": ["x"],
                                                "different": ["seed0_fold1.json"]}
    # a row only the second run has is not compared
    (second / "seed0_fold1.json").write_text(json.dumps({"predictions": {"x": [1.0], "y": [2.0]}}))
    assert ms.compare_reruns(first, second)["identical_predictions"] == 2


def test_a_build_can_be_read_from_a_commit():
    text = ms.read_build("git:HEAD:pyproject.toml")
    assert "[project]" in text
    with pytest.raises(Exception):  # noqa: B017 - git's own error: an unknown revision
        ms.read_build("git:no-such-revision:pyproject.toml")
