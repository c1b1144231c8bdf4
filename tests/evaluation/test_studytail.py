"""The study's error tail: robust σ, the consensus rule and the report, on hand-made records."""

import numpy as np
import pandas as pd
import pytest

from remap_lib.constants import LABEL_NAMES
from remap_lib.evaluation import studytail
from remap_lib.nn.binning import QUANTILES


def test_robust_sigma_by_hand():
    # median 3, absolute deviations 2, 1, 1, 97 -> MAD 1.5; NaN ignored
    assert studytail.robust_sigma(np.array([1.0, 2.0, 4.0, 100.0, np.nan])) == pytest.approx(1.4826 * 1.5)


def test_consensus_needs_every_row_beyond_the_clip_in_one_direction():
    # 100 stars of ±1; with the four changed below each row's median is 1 and its MAD 1, so the clip
    # is 3 × 1.4826 ≈ 4.4 about 1: 20 and -20 lie far beyond it, 4 inside
    core = np.tile([-1.0, 1.0], 50)
    rows = {name: core.copy() for name in "abc"}
    for name in "abc":
        rows[name][0] = 20.0  # every row, same sign: an outlier
    rows["a"][2] = 20.0  # one row only
    rows["a"][4], rows["b"][4], rows["c"][4] = 20.0, 20.0, -20.0  # opposite signs
    rows["a"][6], rows["b"][6], rows["c"][6] = 20.0, 20.0, 4.0  # c: 4 < 3 × 1.4826, inside its clip
    assert list(np.flatnonzero(studytail.consensus(rows))) == [0]


def _records(ids, folds, misses_by_row, truth):
    """One seed's records per row: fold f predicts its test stars at truth + the row's misses."""
    records = []
    for row, misses in misses_by_row.items():
        for f in sorted(set(folds)):
            rows = [i for i, fold in enumerate(folds) if fold == f]
            part = {"id": [ids[i] for i in rows],
                    "truth": {n: [truth[i, j] for i in rows] for j, n in enumerate(LABEL_NAMES)},
                    **{n: {q: [truth[i, j] + misses[i, j] for i in rows] for q in QUANTILES}
                       for j, n in enumerate(LABEL_NAMES)}}
            records.append({"row": row, "seed": 0, "fold": f, "predictions": {row: {"test": part}}})
    return records


def test_tail_report_names_the_stars_every_row_misses_and_drops_them_only_from_the_diagnostic():
    n = 20
    ids = [f"m{i:04d}" for i in range(n)]
    folds = [i % 2 for i in range(n)]
    table = pd.DataFrame({"id": ids, "role": ["finetune"] * n, "fold": folds})
    truth = np.column_stack([np.full(n, 5500.0), np.full(n, 4.4), np.zeros(n)])
    rng = np.random.default_rng(0)
    misses = {}
    for row in ("a", "b"):
        m = np.column_stack([rng.normal(0, 50, n), rng.normal(0, 0.1, n), rng.normal(0, 0.05, n)])
        m[3, 0] = -1000.0  # star m0003: both rows call it 1000 K cooler than its label
        misses[row] = m
    report = studytail.tail_report(_records(ids, folds, misses, truth), table,
                                   {"m0003": {"name": "HD 1", "sptype": "G9III"}}, rows=("a", "b"), n_boot=50)
    teff = report["labels"]["teff"]
    assert [s["id"] for s in teff["consensus"]] == ["m0003"]
    star = teff["consensus"][0]
    assert star["sptype"] == "G9III" and star["literature"]["teff"] == 5500.0
    assert star["miss"] == {"a": pytest.approx(-1000.0), "b": pytest.approx(-1000.0)}
    stats = teff["rows"]["a"]
    assert stats["sigma"] == pytest.approx(np.std(misses["a"][:, 0]))  # the headline keeps every star
    keep = np.arange(n) != 3
    assert stats["sigma_without_consensus"] == pytest.approx(np.std(misses["a"][keep, 0]))
    lo, hi = stats["sigma_without_consensus_ci95"]
    assert lo < stats["sigma_without_consensus"] < hi
    assert stats["n_tail"] >= 1 and report["labels"]["logg"]["consensus"] == []
    with pytest.raises(KeyError, match="no study records"):
        studytail.tail_report([], table, rows=("a",))


def test_frames_and_plot_read_the_report(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = {"clip": 3.0, "labels": {"teff": {
        "rows": {"a": {"sigma": 160.0, "robust_sigma": 100.0, "n_tail": 4, "sigma_without_consensus": 140.0,
                       "sigma_without_consensus_ci95": [120.0, 165.0]}},
        "consensus": [{"id": "m0330", "name": "HD076813", "sptype": "G9III",
                       "literature": {"teff": 6072.0, "logg": 4.2, "feh": -0.82}, "miss": {"a": -1095.0}}],
        "misses": {"a": [10.0, -20.0, None, 1095.0]}}}}
    path = tmp_path / "tail.json"
    path.write_text(__import__("json").dumps(report))
    report = studytail.read_tail(path)
    summary = studytail.summary_frame(report)
    assert summary.loc["a", "σ without consensus outliers"] == 140.0
    assert summary.loc["a", "beyond 3 robust σ (per seed)"] == 4
    stars = studytail.consensus_frame(report)
    assert stars.loc["m0330", "type"] == "G9III" and stars.loc["m0330", "miss: a"] == -1095.0
    _, ax = plt.subplots()
    assert studytail.plot_tail(report, goal=75.0, ax=ax) is ax
    x, y = ax.lines[0].get_data()
    assert list(x) == [10.0, 20.0, 1095.0] and list(y) == pytest.approx([2 / 3, 1 / 3, 0.0])
    plt.close("all")
    with pytest.raises(FileNotFoundError, match="studytail"):
        studytail.read_tail(tmp_path / "none.json")
