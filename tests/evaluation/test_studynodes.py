import json

import numpy as np
import pytest

from remap_lib.evaluation import studynodes
from remap_lib.evaluation import studyrows as sr
from remap_lib.nn.binning import QUANTILES

IDS = [f"node{i}" for i in range(40)]  # enough nodes that no resample is all +30 or all -30
TRUTH = np.column_stack([np.linspace(4000, 6500, 40), np.full(40, 4.0), np.zeros(40)])


def _part(offset_teff, ids=IDS, truth=TRUTH):
    """A record part whose medians are truth + offset_teff (K; log g and [Fe/H] exact), intervals ±100 K."""
    part = {"id": list(ids), "truth": {n: truth[:, j].tolist() for j, n in enumerate(("teff", "logg", "feh"))}}
    for j, n in enumerate(("teff", "logg", "feh")):
        med = truth[:, j] + (np.asarray(offset_teff, float) if j == 0 else 0.0)
        half = 100.0 if j == 0 else 0.1
        ends = {"median": med, "p16": med - half, "p84": med + half, "p2_5": med - 2 * half, "p97_5": med + 2 * half}
        part[n] = {q: ends[q].tolist() for q in QUANTILES}
    return part


def _write(root, row, seed, part, reversed_order=False):
    if reversed_order:  # another record may list the nodes in another order
        order = list(range(len(part["id"])))[::-1]
        part = {"id": [part["id"][i] for i in order],
                **{k: ({q: [v[q][i] for i in order] for q in v} if k != "truth" else
                       {n: [v[n][i] for i in order] for n in v}) for k, v in part.items() if k != "id"}}
    slug = sr.ROW_BY_NAME[row].slug
    path = root / "pretrain" / slug / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"row": row, "seed": seed, "fold": None, "kind": "pretrain",
                                "predictions": {row: {"synthetic_test": part}}}))


def test_metrics_and_paired_difference_on_hand_computed_nodes(tmp_path):
    wobble = np.array([30.0, -30.0] * 20)  # σ 30 K, bias 0, MAD 30 K
    for seed in range(3):
        _write(tmp_path, sr.REDUCED, seed, _part(wobble), reversed_order=seed == 1)
        _write(tmp_path, sr.OFF_LATTICE, seed, _part(np.full(40, 10.0)))  # σ 0, bias +10 K
    _write(tmp_path, sr.REDUCED, 7, _part(wobble))  # a seed the other row lacks: not paired
    result = studynodes.summarize(studynodes.load_node_predictions(tmp_path), n_boot=200)
    ref, new = result[sr.REDUCED], result[sr.OFF_LATTICE]
    assert ref["seeds"] == [0, 1, 2, 7] and ref["nodes"] == 40
    assert ref["metrics"]["sigma"]["teff"]["value"] == pytest.approx(30.0)
    assert ref["metrics"]["mad"]["teff"]["value"] == pytest.approx(30.0)
    assert ref["metrics"]["coverage68"]["teff"]["value"] == pytest.approx(1.0)  # |30| < 100
    assert new["metrics"]["bias"]["teff"]["value"] == pytest.approx(10.0)
    paired = new["paired"]
    assert paired["reference"] == sr.REDUCED and paired["seeds"] == [0, 1, 2]
    sigma = paired["difference"]["sigma"]["teff"]
    assert sigma["value"] == pytest.approx(-30.0) and sigma["excludes_zero"]
    assert paired["difference"]["bias"]["teff"]["value"] == pytest.approx(10.0)
    assert paired["difference"]["sigma"]["logg"]["value"] == 0.0
    assert not paired["difference"]["sigma"]["logg"]["excludes_zero"]
    assert ref["paired"] is None  # deep-REMAP (full budget) has no pretraining records here


def test_a_rows_intervals_do_not_depend_on_which_other_rows_are_recorded(tmp_path):
    rng = np.random.default_rng(4)
    for seed in range(3):
        _write(tmp_path, sr.REDUCED, seed, _part(rng.normal(0, 50, 40)))
        _write(tmp_path, sr.OFF_LATTICE, seed, _part(rng.normal(0, 30, 40)))
    before = studynodes.summarize(studynodes.load_node_predictions(tmp_path), n_boot=200)
    for seed in range(3):  # a row added later, sorted before the others
        _write(tmp_path, sr.LARGER, seed, _part(rng.normal(0, 20, 40)))
    after = studynodes.summarize(studynodes.load_node_predictions(tmp_path), n_boot=200)
    assert list(after) != list(before)
    for row in (sr.REDUCED, sr.OFF_LATTICE):
        assert after[row] == before[row]


def test_command_writes_the_report_and_refuses_records_without_nodes(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no pretraining record"):
        studynodes.main(["--records", str(tmp_path), "--out", str(tmp_path / "nodes.json")])
    _write(tmp_path, sr.REDUCED, 0, _part(np.zeros(40)))
    assert studynodes.main(["--records", str(tmp_path), "--out", str(tmp_path / "nodes.json")]) == 0
    report = json.loads((tmp_path / "nodes.json").read_text())
    assert report["rows"][sr.REDUCED]["metrics"]["sigma"]["teff"]["value"] == 0.0
    assert "1 seeds, 40 nodes" in capsys.readouterr().out


def test_table_and_sentence_quote_the_report(tmp_path):
    for seed in range(2):
        _write(tmp_path, sr.REDUCED, seed, _part(np.array([30.0, -30.0] * 20)))
        _write(tmp_path, sr.OFF_LATTICE, seed, _part(np.zeros(40)))
    studynodes.main(["--records", str(tmp_path), "--out", str(tmp_path / "nodes.json")])
    report = studynodes.read_nodes(tmp_path / "nodes.json")
    frame = studynodes.table(report, [sr.REDUCED, sr.OFF_LATTICE, "no SWA"])  # a row not run is left out
    assert list(frame.index) == [sr.REDUCED, sr.OFF_LATTICE]
    assert frame.loc[sr.REDUCED, "σ T<sub>eff</sub>"].startswith("30 [")
    sentence = studynodes.effect_sentence(report, sr.OFF_LATTICE, "sigma", "teff")
    assert "−30 K" not in sentence and "-30 K [" in sentence and "2 paired seeds" in sentence
    assert "an effect" in sentence
    assert studynodes.effect_sentence(report, sr.REDUCED).endswith("no paired held-out node scores yet")
    with pytest.raises(FileNotFoundError, match="studynodes"):
        studynodes.read_nodes(tmp_path / "absent.json")


def test_the_two_larger_networks_are_compared_with_each_other_on_the_same_nodes_and_seeds(tmp_path):
    for seed in range(3):
        _write(tmp_path, sr.REDUCED, seed, _part(np.array([30.0, -30.0] * 20)))
        _write(tmp_path, sr.LARGER, seed, _part(np.array([20.0, -20.0] * 20)))
        _write(tmp_path, sr.PAPER_SIZED, seed, _part(np.array([20.0, -20.0] * 20) + (5.0 if seed else 0.0)))
    rows = studynodes.load_node_predictions(tmp_path)
    (compared,) = studynodes.comparisons(rows, n_boot=200)
    assert compared["row"] == sr.PAPER_SIZED and compared["reference"] == sr.LARGER
    assert compared["difference"]["bias"]["teff"]["value"] == pytest.approx(10.0 / 3)  # +5 K on two of three seeds
    report = {"snr": 50.0, "rows": studynodes.summarize(rows, n_boot=200), "comparisons": [compared]}
    sentence = studynodes.effect_sentence(report, sr.PAPER_SIZED, "bias", "teff", reference=sr.LARGER)
    assert sentence.startswith(f"{sr.PAPER_SIZED} − {sr.LARGER}, bias of T<sub>eff</sub>")
    assert "over 3 paired seeds" in sentence
    assert studynodes.effect_sentence(report, sr.PAPER_SIZED, "bias", "teff").startswith(
        f"{sr.PAPER_SIZED} − {sr.REDUCED}")  # its own reference otherwise
    assert "no paired" in studynodes.effect_sentence(report, sr.LARGER, reference=sr.PAPER_SIZED)
