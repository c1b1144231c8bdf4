"""The metrics file: sections kept, JSON-safe values, atomic writes, one file per profile."""

from __future__ import annotations

import json

import numpy as np
import pytest

from remap_lib.book import results


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path / "results")
    return tmp_path


def test_metrics_path_per_profile(repo):
    assert results.metrics_path() == repo / "results" / "metrics.json"
    assert results.metrics_path("default") == repo / "results" / "metrics.json"
    assert results.metrics_path("smoke") == repo / "results" / "smoke" / "metrics.json"


def test_update_keeps_other_sections_and_replaces_its_own(repo):
    results.update_metrics("validation", {"sigma": 1.0})
    results.update_metrics("giants", {"n": 3})
    results.update_metrics("validation", {"sigma": 2.0})
    assert results.load_metrics() == {"validation": {"sigma": 2.0}, "giants": {"n": 3}}
    # another profile writes elsewhere and never touches the book's numbers
    path = results.update_metrics("validation", {"sigma": 9.0}, profile="smoke")
    assert path == repo / "results" / "smoke" / "metrics.json"
    assert results.load_metrics("smoke") == {"validation": {"sigma": 9.0}}
    assert results.load_metrics()["validation"] == {"sigma": 2.0}


def test_values_made_json_safe(repo):
    values = {"f32": np.float32(0.5), "i64": np.int64(7), "b": np.bool_(True), "arr": np.array([1.0, np.nan]),
              "nan": float("nan"), "inf": np.float64(np.inf), "tuple": (1, np.float64(-np.inf)),
              1: {"nested": np.array([[1, 2]], dtype=np.int32)}}
    path = results.update_metrics("s", values)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)["s"]
    assert loaded == {"f32": 0.5, "i64": 7, "b": True, "arr": [1.0, None], "nan": None, "inf": None,
                      "tuple": [1, None], "1": {"nested": [[1, 2]]}}
    assert type(loaded["i64"]) is int and type(loaded["b"]) is bool


def test_update_is_atomic(repo):
    path = results.update_metrics("a", {"x": 1})
    with pytest.raises(TypeError):
        results.update_metrics("b", {"x": object()})  # not JSON-serializable: fails half-way through the dump
    assert json.loads(path.read_text()) == {"a": {"x": 1}}  # the old file survives intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]  # no temporary left behind


def test_load_missing_profile_is_empty(repo):
    assert results.load_metrics("paper") == {}
