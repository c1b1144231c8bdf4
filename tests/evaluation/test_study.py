"""The evaluation study: folds, claims, metrics on hand-computed arrays, paired differences, a tiny run."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import toydata
from toydata import INSTRUMENT, TINY_ARCH

from remap_lib.data.dataset import LABEL_NAMES
from remap_lib.evaluation import runqueue, study, studybudgets, studyruns, studystats, studystatus
from remap_lib.evaluation import studyrows as sr
from remap_lib.evaluation.evaluate import scatter_metrics
from remap_lib.evaluation.folds import fold_ids, make_folds, read_folds, write_folds
from remap_lib.nn.binning import DEFAULT_BINS
from remap_lib.nn.modelfile import load_model, save_model, weights_sha256
from remap_lib.training import profiles
from remap_lib.training.augment import AugmentConfig
from remap_lib.training.train import build_model
from remap_lib.training.transfer import DISTILL_RATIO


def splits_table(n=40, seed=0, giants=5):
    rng = np.random.default_rng(seed)
    teff = np.round(rng.uniform(4000, 7000, n + giants))
    role = np.array(["finetune"] * (n - 6) + ["calibration"] * 3 + ["validation"] * 3 + ["giant_candidate"] * giants)
    return pd.DataFrame({"id": [f"m{i:04d}" for i in range(n + giants)], "teff": teff,
                         "logg": np.where(role == "giant_candidate", 2.5, 4.4), "role": role})


# -------------------------------------------------------------------------------------------- folds
def test_folds_cover_every_dwarf_once_stratified_by_teff():
    splits = splits_table(43)
    table = make_folds(splits, k=5, seed=3)
    assert sorted(table["id"]) == sorted(splits.loc[splits.role != "giant_candidate", "id"])
    sizes = table["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 1 and len(sizes) == 5
    ordered = table.sort_values(["teff", "id"])["fold"].to_numpy()
    for start in range(0, 40, 5):  # each consecutive Teff group of K holds every fold once
        assert sorted(ordered[start:start + 5]) == [0, 1, 2, 3, 4]
    for f in range(5):
        test, tune, temp = (set(fold_ids(table, f, u)) for u in ("test", "finetune", "temperature"))
        assert test == set(table.loc[table.fold == f, "id"])
        assert not (test & tune) and not (test & temp) and not (tune & temp)
        assert len(test | tune | temp) == len(table)
        assert len(temp) == round(0.15 * (len(table) - len(test)))


def test_folds_are_reproducible_from_their_seed():
    splits = splits_table(40)
    assert make_folds(splits, seed=1).equals(make_folds(splits, seed=1))
    assert not make_folds(splits, seed=1)["fold"].equals(make_folds(splits, seed=2)["fold"])


def test_fold_table_round_trips_and_rejects_inconsistent_columns(tmp_path):
    table = make_folds(splits_table(40), k=4, seed=0)
    path = write_folds(table, tmp_path / "folds.csv", seed=0)
    assert path.read_text().startswith("# remap study")
    back = read_folds(path)
    assert back[["id", "fold", "fold0", "fold3"]].equals(table[["id", "fold", "fold0", "fold3"]])
    broken = table.copy()
    broken.loc[broken.fold == 1, "fold1"] = "finetune"  # a held-out star that is also trained on
    write_folds(broken, tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="fold1"):
        read_folds(tmp_path / "bad.csv")


# -------------------------------------------------------------------------------------------- claims
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_claims_are_exclusive_and_released(tmp_path):
    assert runqueue.try_claim(tmp_path, "runs/a/seed0_fold0")
    assert not runqueue.try_claim(tmp_path, "runs/a/seed0_fold0")  # held by a live process (us)
    assert list(runqueue.live_claims(tmp_path)) == ["runs/a/seed0_fold0"]
    runqueue.release(tmp_path, "runs/a/seed0_fold0")
    assert runqueue.live_claims(tmp_path) == {}
    assert runqueue.try_claim(tmp_path, "runs/a/seed0_fold0")


def test_a_dead_processs_claim_is_taken_over_but_another_hosts_is_not(tmp_path):
    path = runqueue.claim_path(tmp_path, "k")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "started": "then"}))
    assert runqueue.live_claims(tmp_path) == {}
    assert runqueue.try_claim(tmp_path, "k")
    assert runqueue.read_claim(path)["pid"] == os.getpid()
    path.write_text(json.dumps({"pid": dead_pid(), "host": "elsewhere", "started": "then"}))
    assert not runqueue.try_claim(tmp_path, "k")
    runqueue.release(tmp_path, "k")  # not ours: left alone
    assert path.exists()


# -------------------------------------------------------------------------------------------- metrics
def prediction(median, half68, half95):
    """(n, 3, 5) predictions with the same numbers for every label: median, p16, p84, p2.5, p97.5."""
    m = np.asarray(median, dtype=float)
    one = np.column_stack([m, m - half68, m + half68, m - half95, m + half95])
    return np.repeat(one[:, None, :], 3, axis=1)


def test_label_metrics_on_hand_computed_numbers():
    truth = np.repeat(np.array([5000.0, 5100.0, 5200.0, 5300.0])[:, None], 3, axis=1)
    pred = prediction([5010, 5080, 5230, 5300], [15, 15, 15, 15], [25, 25, 25, 25])
    out = studystats.label_metrics(pred, truth)
    # errors +10, -20, +30, 0: mean 5, population std sqrt(325), MAD median(|e - 5|) = median(5, 25, 25, 5) = 15
    np.testing.assert_allclose(out["bias"], 5.0)
    np.testing.assert_allclose(out["sigma"], np.sqrt(325.0))
    np.testing.assert_allclose(out["mad"], 15.0)
    np.testing.assert_allclose(out["coverage68"], 0.5)  # |e| <= 15 for +10 and 0
    np.testing.assert_allclose(out["coverage95"], 0.75)  # the +30 star falls outside ±25
    ref = scatter_metrics({n: {"median": pred[:, 0, 0]} for n in LABEL_NAMES}, truth)
    np.testing.assert_allclose(out["sigma"][0], ref["teff"]["sigma"])
    np.testing.assert_allclose(out["mad"][0], ref["teff"]["mad"])


def test_label_metrics_skip_missing_predictions_and_intervals_and_call_giants():
    truth = np.array([[5000.0, 2.0, 0.0], [5000.0, 3.0, 0.0], [5000.0, 4.0, 0.0]])
    pred = prediction([5000.0, 5000.0, 5000.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    pred[:, 1, 0] = [3.0, np.nan, 3.6]  # log g medians: giant called giant, no prediction, giant called dwarf
    pred[2, 0, 1:] = np.nan  # no Teff interval for star 2
    out = studystats.label_metrics(pred, truth)
    assert out["accuracy"] == pytest.approx(1.0)  # star 0 right; star 2 (truth 4.0, called 3.6) right; star 1 skipped
    assert out["coverage68"][0] == pytest.approx(1.0)  # 2 stars with an interval, both inside
    np.testing.assert_allclose(out["bias"][1], np.mean([1.0, -0.4]))


def record(row, seed, fold, ids, truth, median, giants=None):
    part = {"id": list(ids), "truth": {n: list(truth[:, j]) for j, n in enumerate(LABEL_NAMES)}}
    for j, n in enumerate(LABEL_NAMES):
        m = np.asarray(median)[:, j]
        part[n] = {"median": list(m), "p16": list(m - 1), "p84": list(m + 1), "p2_5": list(m - 2),
                   "p97_5": list(m + 2)}
    preds = {"test": part}
    if giants is not None:
        preds["giants"] = giants
    return {"key": f"runs/{row}/seed{seed}_fold{fold}", "row": row, "kind": "x", "seed": seed, "fold": fold,
            "config": {}, "device": "cpu", "wall_s": 1.0, "data": {}, "predictions": {row: preds}}


def write_records(out, records):
    for rec in records:
        runqueue.write_record(out, rec["key"], rec)


def test_aggregate_pairs_rows_on_the_same_stars_and_seeds(tmp_path):
    splits = splits_table(20, giants=0)
    folds = make_folds(splits, k=2, seed=0)
    truth = np.column_stack([folds.teff, np.full(20, 4.4), np.zeros(20)])
    rng = np.random.default_rng(0)
    noise = {s: rng.normal(0, 50, 20) for s in (0, 1)}
    records = []
    for seed in (0, 1):
        for f in (0, 1):
            rows = np.flatnonzero(folds.fold == f)
            ids = folds.id.to_numpy()[rows]
            base = truth[rows] + np.column_stack([noise[seed][rows], np.zeros((len(rows), 2))])
            records.append(record(sr.FULL, seed, f, ids, truth[rows], base))
            # the variant is the full method plus 100 K for every star: a difference of exactly +100 K bias
            records.append(record("one member", seed, f, ids, truth[rows], base + [100.0, 0.0, 0.0]))
    records.append(record("MSE regression CNN", 0, 0, folds.id[folds.fold == 0], truth[folds.fold == 0],
                          truth[folds.fold == 0]))  # an incomplete seed: not aggregated
    write_records(tmp_path, records)
    result = studystats.aggregate(tmp_path, folds, n_boot=200)
    rows = {r["name"]: r for r in result["rows"]}
    full, one = rows[sr.FULL], rows["one member"]
    assert full["n_seeds"] == 2 and rows["MSE regression CNN"]["n_seeds"] == 0
    assert rows["MSE regression CNN"]["cv_dwarfs"] is None
    expect = np.mean([np.std(noise[s]) for s in (0, 1)])
    assert full["cv_dwarfs"]["teff"]["sigma"] == pytest.approx(expect)
    lo, hi = full["cv_dwarfs"]["teff"]["ci95"]
    assert lo < expect < hi
    assert full["cv_dwarfs"]["n"] == 20 and full["calibration_stars"]["n"] == 3
    paired = one["paired"]["cv_dwarfs"]["teff"]
    assert paired["bias"]["difference"] == pytest.approx(100.0)
    assert paired["bias"]["ci95"] == pytest.approx([100.0, 100.0])  # the same resampled stars on both sides
    assert paired["bias"]["excludes_zero"] and paired["bias"]["std"] == pytest.approx(0.0)
    assert paired["sigma"]["difference"] == pytest.approx(0.0, abs=1e-9)
    assert not paired["sigma"]["excludes_zero"]
    assert any("one member" in e and "teff bias" in e for e in result["effects"])
    assert not any("teff sigma" in e for e in result["effects"])
    json.dumps(result, allow_nan=False)  # the aggregate is strict JSON
    assert result["warnings"] == []


def test_aggregate_adds_conformal_intervals_fitted_on_the_other_folds(tmp_path):
    folds = make_folds(splits_table(20, giants=0), k=2, seed=0)
    truth = np.column_stack([folds.teff, np.full(20, 4.4), np.zeros(20)])
    records = []
    for f, miss in ((0, 3.0), (1, 0.5)):  # fold 0 misses by 3 half-widths, fold 1 by half of one
        rows = np.flatnonzero(folds.fold == f)
        giant_truth = np.array([[4800.0, 2.5, 0.0]])
        giants = record("x", 0, f, ["g1"], giant_truth, giant_truth)["predictions"]["x"]["test"]
        records.append(record(sr.REHEARSAL, 0, f, folds.id.to_numpy()[rows], truth[rows], truth[rows] + miss,
                              giants))
    write_records(tmp_path, records)
    rows = {r["name"]: r for r in studystats.aggregate(tmp_path, folds, n_boot=20)["rows"]}
    source, conformal = rows[sr.REHEARSAL], rows[f"{sr.REHEARSAL}, {sr.CONFORMAL}"]
    assert source["cv_dwarfs"]["teff"]["coverage68"] == pytest.approx(0.5)  # fold 1 inside ±1, fold 0 not
    # fold 0 is scaled by fold 1's factor (0.5) and fold 1 by fold 0's (3): neither covers its own misses
    assert conformal["cv_dwarfs"]["teff"]["coverage68"] == pytest.approx(0.5)
    assert conformal["cv_dwarfs"]["teff"]["sigma"] == source["cv_dwarfs"]["teff"]["sigma"]  # medians unchanged
    assert conformal["interval_factors"]["68"]["teff"] == {"mean": 1.75, "min": 0.5, "max": 3.0}
    assert conformal["paired"]["reference"] == sr.REHEARSAL and conformal["giants"]["n"] == 1
    records = studystats.collect(studystats.load_records(tmp_path))
    assert f"{sr.REHEARSAL}, {sr.CONFORMAL}" not in records  # never written by a run
    # the noisy copies' conformal rows come from rehearsal's runs, through their own derived source
    noisy = f"{sr.at_snr(sr.REHEARSAL, 20)}, {sr.CONFORMAL}"
    assert sr.ROW_BY_NAME[noisy].source == sr.at_snr(sr.REHEARSAL, 20)
    assert sr.run_row(noisy) == sr.REHEARSAL
    assert study.plan([noisy], [0], 2)[0].key == "runs/synthetic_rehearsal/seed0_fold0"
    # and the shipped recipe's, whose factors the model carries, measured out of fold the same way
    recipe = f"{sr.at_snr(sr.SHIPPED_ROW, 10)}, {sr.CONFORMAL}"
    assert sr.ROW_BY_NAME[recipe].source == sr.ROW_BY_NAME[recipe].reference == sr.at_snr(sr.SHIPPED_ROW, 10)
    assert sr.run_row(recipe) == sr.SHIPPED_ROW and sr.ROW_BY_NAME[recipe].distill_labels == sr.TEFF_LOGG


def test_aggregate_reads_the_pmf_mean_as_the_estimate_where_the_records_hold_it(tmp_path):
    """The PMF-mean row is the recipe with each median replaced by the recorded mean, intervals as they were,
    for the seeds whose every part holds the mean (seed 1's records predate it: left out)."""
    folds = make_folds(splits_table(20, giants=0), k=2, seed=0)
    truth = np.column_stack([folds.teff, np.full(20, 4.4), np.zeros(20)])
    records = []
    for seed in (0, 1):
        for f in (0, 1):
            rows = np.flatnonzero(folds.fold == f)
            rec = record(sr.NOISE_DISTILL_TEFF_LOGG, seed, f, folds.id.to_numpy()[rows], truth[rows], truth[rows])
            if seed == 0:
                for j, n in enumerate(LABEL_NAMES):  # means 10 K / 0.1 dex / 0 above the truth
                    rec["predictions"][sr.NOISE_DISTILL_TEFF_LOGG]["test"][n]["mean"] = list(
                        truth[rows, j] + [10.0, 0.1, 0.0][j])
            records.append(rec)
    write_records(tmp_path, records)
    rows = {r["name"]: r for r in studystats.aggregate(tmp_path, folds, n_boot=20)["rows"]}
    source, mean = rows[sr.NOISE_DISTILL_TEFF_LOGG], rows[sr.PMF_MEAN]
    assert source["n_seeds"] == 2 and mean["n_seeds"] == 1
    assert source["cv_dwarfs"]["teff"]["bias"] == pytest.approx(0.0)
    assert mean["cv_dwarfs"]["teff"]["bias"] == pytest.approx(10.0)
    assert mean["cv_dwarfs"]["logg"]["bias"] == pytest.approx(0.1)
    # the intervals are left as they were (about the median): the coverage does not change
    assert mean["cv_dwarfs"]["teff"]["coverage68"] == pytest.approx(source["cv_dwarfs"]["teff"]["coverage68"])
    assert mean["paired"]["reference"] == sr.NOISE_DISTILL_TEFF_LOGG
    assert sr.PMF_MEAN not in studystats.collect(studystats.load_records(tmp_path))  # never written by a run


def test_giant_folds_deal_the_ids_out_evenly_by_id_alone():
    from remap_lib.evaluation.folds import giant_folds

    ids = [f"g{i:03d}" for i in range(11)]
    of = giant_folds(ids, 3, seed=0)
    assert sorted(of) == ids and sorted(np.bincount(list(of.values()))) == [3, 4, 4]
    assert giant_folds(list(reversed(ids)), 3, seed=0) == of  # the order given does not matter
    assert giant_folds(ids, 3, seed=1) != of
    with pytest.raises(ValueError, match="cannot fill"):
        giant_folds(ids[:2], 3)


def test_aggregate_scores_held_out_giants_once_each(tmp_path):
    """A row whose folds each score their own giants gives one prediction per giant and seed, like the dwarfs;
    a row whose folds all score every giant keeps one replicate per fold."""
    folds = make_folds(splits_table(20, giants=0), k=2, seed=0)
    truth = np.column_stack([folds.teff, np.full(20, 4.4), np.zeros(20)])
    giant_truth = np.array([[4800.0, 2.5, 0.0], [4900.0, 2.0, -0.5], [5000.0, 3.0, 0.1]])
    gids = ["g1", "g2", "g3"]

    def giants(ids, rows, offset):
        return record("x", 0, 0, ids, giant_truth[rows], giant_truth[rows] + offset)["predictions"]["x"]["test"]

    records = []
    for f in (0, 1):
        rows = np.flatnonzero(folds.fold == f)
        dwarfs = (folds.id.to_numpy()[rows], truth[rows], truth[rows])
        held = [0, 1] if f == 0 else [2]  # fold 0 scores g1 and g2, fold 1 g3; log g 1.5 too high
        records.append(record(sr.DISTILL, 0, f, *dwarfs, giants([gids[i] for i in held], held, [0.0, 1.5, 0.0])))
        records.append(record(sr.REHEARSAL, 0, f, *dwarfs, giants(gids, [0, 1, 2], [0.0, 0.6 * f, 0.0])))
    write_records(tmp_path, records)
    result = studystats.aggregate(tmp_path, folds, n_boot=20)
    rows = {r["name"]: r for r in result["rows"]}
    held_out, every = rows[sr.DISTILL]["giants"], rows[sr.REHEARSAL]["giants"]
    assert held_out["n"] == 3 and held_out["logg"]["bias"] == pytest.approx(1.5)
    assert held_out["accuracy"] == pytest.approx(0.0)  # 4.0, 3.5 and 4.5: none below 3.5
    # every fold scored every giant: fold 0 exact (all giant), fold 1 +0.6 (2.5+.6, 2.6, 3.6: two giant)
    assert every["accuracy"] == pytest.approx((1.0 + 2 / 3) / 2) and every["logg"]["bias"] == pytest.approx(0.3)


def test_aggregate_warns_when_a_rows_runs_used_other_settings(tmp_path):
    folds = make_folds(splits_table(20, giants=0), k=2, seed=0)
    truth = np.column_stack([folds.teff, np.full(20, 4.4), np.zeros(20)])
    records = []
    for f, epochs in ((0, 60), (1, 20)):
        rows = np.flatnonzero(folds.fold == f)
        rec = record(sr.FULL, 0, f, folds.id.to_numpy()[rows], truth[rows], truth[rows])
        rec["config"] = {"finetune": {"epochs": epochs, "seed": f}}
        records.append(rec)
    write_records(tmp_path, records)
    assert studystats.aggregate(tmp_path, folds, n_boot=10)["warnings"] == [
        "deep-REMAP: runs used 2 different settings (budgets or profiles)"]
    records[1]["config"]["finetune"].update(epochs=60, threads=2)  # seeds and threads alone differ: the same settings
    write_records(tmp_path, records)
    assert studystats.aggregate(tmp_path, folds, n_boot=10)["warnings"] == []


# -------------------------------------------------------------------------------------------- plan
def test_plan_runs_deterministic_rows_once_and_pretrains_before_its_folds():
    tasks = study.plan(["no SWA", "The Cannon", "one member"], [0, 1], k=3)
    keys = [t.key for t in tasks]
    assert keys.count("runs/the_cannon/seed0_fold0") == 1 and not any("the_cannon/seed1" in k for k in keys)
    assert "runs/deep_remap/seed1_fold2" in keys  # a derived row brings the full method's runs
    pre = keys.index("pretrain/no_swa/seed1")
    assert all(keys.index(f"runs/no_swa/seed1_fold{f}") > pre for f in range(3))
    assert all(t.needs == ("pretrain/no_swa/seed1",) for t in tasks if t.key.startswith("runs/no_swa/seed1"))
    assert study.parse_seeds("0-2,5") == [0, 1, 2, 5]
    assert study.plan(["no_swa"], [0], k=3) == study.plan(["no SWA"], [0], k=3)  # a slug names its row
    with pytest.raises(ValueError, match="unknown study row"):
        study.plan(["no such row"], [0], 2)


def test_every_row_names_a_known_reference_and_the_reduced_rows_change_one_setting():
    names = {r.name for r in sr.ROWS}
    assert all(r.reference in names for r in sr.ROWS if r.reference)
    reduced = [r for r in sr.ROWS if r.kind == "reduced" and r.name != sr.REDUCED]
    # one training setting (in both stages or in pretraining alone), the grid they learn from, or the network
    assert all(len(r.change) + len(r.pretrain_change) + r.pixel_in_lsf + (r.network is not None) == 1
               and r.reference == sr.REDUCED for r in reduced)
    assert set(sr.RUN_ORDER) == {r.name for r in sr.ROWS if r.kind != "derived"}
    derived = [r for r in sr.ROWS if r.kind == "derived"]
    assert all(r.recipe in sr.RECIPES for r in derived)
    # a row is at an S/N when it degrades the stars, or scales the predictions of a row that does
    assert all((r.snr is not None) == (r.recipe == "degraded" or sr.ROW_BY_NAME[r.source or sr.FULL].snr is not None)
               for r in derived)


def test_the_recipes_variants_change_only_their_own_setting():
    budgets = studybudgets.Budgets.from_profiles("default")
    recipe = budgets.finetune(sr.ROW_BY_NAME[sr.NOISE_DISTILL_TEFF_LOGG], 3)  # the recipe they vary
    for name, setting in ((sr.NOISE_DISTILL_NO_SWA, {"swa_start": 1.0}),
                          (sr.NOISE_DISTILL_SWA_BN, {"swa_bn_rows": "epoch"}),
                          (sr.NOISE_DISTILL_WIDE, {"label_sigma": sr.WIDE_TARGETS}),
                          (sr.NOISE_DISTILL_ALIGN, {"align_weight": sr.ALIGN_WEIGHT}),
                          (sr.NOISE_DISTILL_FROZEN, {"freeze_epochs": sr.FROZEN_THROUGHOUT})):
        row = sr.ROW_BY_NAME[name]
        assert budgets.finetune(row, 3) == dataclasses.replace(recipe, **setting), name
        assert row.reference == sr.NOISE_DISTILL_TEFF_LOGG
    # the SWA rows get conformal intervals too, as the recipe does, so that their coverage compares
    assert all(f"{n}, {sr.CONFORMAL}" in sr.ROW_BY_NAME
               for n in (sr.NOISE_DISTILL_NO_SWA, sr.NOISE_DISTILL_SWA_BN, sr.NOISE_DISTILL_ALIGN))


def test_the_larger_network_row_trains_the_profiles_pretraining_network_and_nothing_else_changes():
    budgets = studybudgets.Budgets.from_profiles("default")
    reduced, larger = sr.ROW_BY_NAME[sr.REDUCED], sr.ROW_BY_NAME[sr.LARGER]
    pretraining = profiles.resolve("pretrain", "default")
    assert budgets.arch_for(reduced) == budgets.arch  # every other row keeps the ablations' network
    assert budgets.arch_for(larger) == {"stage_channels": tuple(pretraining["stage_channels"]),
                                        "blocks_per_stage": pretraining["blocks_per_stage"]}
    assert budgets.arch_for(larger) != budgets.arch
    assert budgets.pretrain(larger, 2) == budgets.pretrain(reduced, 2)  # same epochs, same settings
    assert budgets.finetune(larger, 2) == budgets.finetune(reduced, 2)
    assert larger.reference == sr.REDUCED and larger.pretrains
    described = budgets.describe()["networks"][sr.PRETRAINING_NETWORK]
    assert described["stage_channels"] == list(pretraining["stage_channels"])
    paper_sized, paper = sr.ROW_BY_NAME[sr.PAPER_SIZED], profiles.resolve("pretrain", "paper")
    assert budgets.arch_for(paper_sized)["stage_channels"] == tuple(paper["stage_channels"])
    assert budgets.arch_for(paper_sized)["blocks_per_stage"] == paper["blocks_per_stage"]
    assert budgets.pretrain(paper_sized, 2) == budgets.pretrain(reduced, 2) and paper_sized.reference == sr.REDUCED
    with pytest.raises(ValueError, match="these budgets do not name it"):
        studybudgets.Budgets(budgets.default, budgets.reduced).arch_for(larger)
    assert not any(budgets.repeats_reduced(r) for r in sr.ROWS)
    # the paper profile's ablations train the paper network already: its larger rows would repeat them
    paper_budgets = studybudgets.Budgets.from_profiles("paper")
    assert paper_budgets.repeats_reduced(larger) and paper_budgets.repeats_reduced(paper_sized)
    assert not paper_budgets.repeats_reduced(reduced)


# -------------------------------------------------------------------------------------------- a tiny study
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    miles = toydata.toy_set(160, seed=1, id_prefix="m", n_val=0, kind="observed")
    role = np.where(miles.labels[:, 1] >= 3.5, "finetune", "giant_candidate")
    role[np.flatnonzero(role == "finetune")[:4]] = "calibration"
    splits = pd.DataFrame({"id": miles.ids, "teff": miles.labels[:, 0], "role": role})
    folds = make_folds(splits, k=2, seed=0)
    torch.manual_seed(0)
    npix = miles.flux.shape[1]
    start = {"deep-remap": save_model(root / "pre.pt", build_model(npix, DEFAULT_BINS, **TINY_ARCH), DEFAULT_BINS,
                                      INSTRUMENT),
             "mse": save_model(root / "pre_mse.pt", build_model(npix, DEFAULT_BINS, head="regression", **TINY_ARCH),
                               DEFAULT_BINS, INSTRUMENT, label_stats=([5500.0, 3.0, -0.7], [800.0, 1.2, 0.7]))}
    budgets = studybudgets.Budgets(
        default={"epochs": 1, "batch_size": 8, "lr": 1e-3, "freeze_epochs": 0, "backbone_lr_factor": 0.1,
                 "members": 2, "swa_start": 1.0},
        reduced={"pretrain_epochs": 1, "finetune_epochs": 1, "stage_channels": [4, 8], "blocks_per_stage": 1,
                 "batch_size": 8, "members": 1,
                 "arch": {k: v for k, v in TINY_ARCH.items() if k != "stage_channels"}},
        overrides={"threads": 1, "augment": AugmentConfig.none()})
    st = study.Study(miles, toydata.toy_set(48, seed=5), folds, splits.loc[role == "giant_candidate", "id"].tolist(),
                     budgets, start, root / "out", root / "work", progress=False)
    tasks = study.plan(["one member", "MSE regression CNN", sr.REDUCED, "no SWA", "no pretraining", "The Cannon",
                        "chi2 grid fit", sr.REHEARSAL, sr.DISTILL], [0], st.k)
    summary = study.run_study(st, tasks)
    return st, tasks, summary


def test_a_row_on_the_grid_degraded_with_the_pixel_in_the_lsf_reads_that_grid(tiny, tmp_path):
    st, _, _ = tiny
    built = []

    def builder():
        built.append(1)
        return dataclasses.replace(st.synthetic, flux=st.synthetic.flux * 0.99 + 0.01)

    pixel = dataclasses.replace(st, out=tmp_path / "out", work=tmp_path / "work", hashes=dict(st.hashes),
                    pixel_lsf_synthetic=builder)
    row = sr.ROW_BY_NAME[sr.PIXEL_LSF]
    assert pixel.synthetic_for(row) is pixel.synthetic_for(row) and built == [1]  # built once
    assert pixel.synthetic_for(sr.ROW_BY_NAME[sr.REDUCED]) is st.synthetic
    assert study.run_study(pixel, study.plan([sr.PIXEL_LSF], [0], pixel.k))["left"] == 0
    pre = runqueue.read_record(pixel.out, f"pretrain/{row.slug}/seed0")
    assert pre["config"]["pixel_in_lsf"] is True and "synthetic" not in pre["data"]
    assert pre["data"][study.PIXEL_LSF_KEY] not in (None, st.hashes["synthetic"])
    assert runqueue.read_record(pixel.out, f"runs/{row.slug}/seed0_fold0")["config"]["pixel_in_lsf"] is True
    other = dataclasses.replace(st, hashes=dict(st.hashes),
                                pixel_lsf_synthetic=lambda: st.synthetic.select(np.arange(10)))
    with pytest.raises(ValueError, match="does not hold the training file's grid, nodes and split"):
        other.synthetic_for(row)
    elsewhere = dataclasses.replace(st.synthetic, provenance={**st.synthetic.provenance, "grid": {"file": "other"}})
    with pytest.raises(ValueError, match="does not hold the training file's grid"):  # same nodes, another grid
        dataclasses.replace(st, hashes=dict(st.hashes), pixel_lsf_synthetic=lambda: elsewhere).synthetic_for(row)
    with pytest.raises(ValueError, match="no way to build it"):
        dataclasses.replace(st, hashes=dict(st.hashes)).synthetic_for(row)


def _lattice_grid(base):
    """``base``'s 48 spectra relabelled onto a 6 x 4 x 2 lattice, every eighth node held out as 'test'."""
    i = np.arange(len(base))
    labels = np.column_stack([4000 + 250 * (i % 6), 3.0 + 0.5 * (i // 6 % 4), np.where(i < 24, 0.0, -0.25)])
    split = np.where(i % 8 == 3, "test", "train")
    return dataclasses.replace(base, labels=labels, meta={"split": split})


def test_off_lattice_row_mixes_nodes_in_pretraining_only_and_scores_the_held_out_nodes(tiny, tmp_path):
    st, _, _ = tiny
    grid = _lattice_grid(st.synthetic)
    lattice = dataclasses.replace(st, synthetic=grid, out=tmp_path / "out", work=tmp_path / "work",
                                  hashes=dict(st.hashes))
    row = sr.ROW_BY_NAME[sr.OFF_LATTICE]
    assert study.run_study(lattice, study.plan([sr.OFF_LATTICE], [0], lattice.k))["left"] == 0
    pre = runqueue.read_record(lattice.out, f"pretrain/{row.slug}/seed0")
    assert pre["config"]["pretrain"]["node_mix"] == sr.OFF_LATTICE_MIX
    network = load_model(lattice.pretrained_path(row, 0))[0]
    assert pre["config"]["weights_sha256"] == weights_sha256(network.state_dict())
    nodes = pre["predictions"][row.name]["synthetic_test"]
    assert nodes["id"] == [str(i) for i in grid.ids[grid.meta["split"] == "test"]]
    assert nodes["truth"]["teff"] == [float(v) for v in grid.labels[grid.meta["split"] == "test", 0]]
    fold = runqueue.read_record(lattice.out, f"runs/{row.slug}/seed0_fold0")
    assert "node_mix" not in fold["config"]["finetune"]  # the dwarfs are not a lattice
    # the same network, scored again on the same noise, gives the same record
    again = studyruns.held_out_node_predictions(load_model(lattice.pretrained_path(row, 0))[0], grid)
    assert again["synthetic_test"] == nodes


def test_the_larger_network_row_pretrains_and_fine_tunes_the_larger_network(tiny, tmp_path):
    st, _, _ = tiny
    bigger = {"stage_channels": (8, 16), "blocks_per_stage": 2}
    larger = dataclasses.replace(st, out=tmp_path / "out", work=tmp_path / "work", hashes=dict(st.hashes),
                                 budgets=dataclasses.replace(st.budgets, networks={sr.PRETRAINING_NETWORK: bigger}))
    row = sr.ROW_BY_NAME[sr.LARGER]
    assert study.run_study(larger, study.plan([sr.LARGER], [0], larger.k))["left"] == 0
    pre = runqueue.read_record(larger.out, f"pretrain/{row.slug}/seed0")
    assert pre["config"]["arch"]["stage_channels"] == [8, 16] and pre["config"]["arch"]["blocks_per_stage"] == 2
    assert pre["config"]["arch"]["embedding_dim"] == TINY_ARCH["embedding_dim"]  # the rest of the reduced network
    network = load_model(larger.pretrained_path(row, 0))[0]
    reduced = load_model(st.pretrained_path(sr.ROW_BY_NAME[sr.REDUCED], 0))[0]
    assert sum(p.numel() for p in network.parameters()) > 2 * sum(p.numel() for p in reduced.parameters())
    fold = runqueue.read_record(larger.out, f"runs/{row.slug}/seed0_fold0")
    assert fold["config"]["arch"] == pre["config"]["arch"]


def test_a_pretraining_without_its_record_runs_again_though_its_folds_are_done(tiny, tmp_path):
    st, _, _ = tiny
    copy = dataclasses.replace(st, out=tmp_path / "out", work=tmp_path / "work", hashes=dict(st.hashes))
    tasks = study.plan([sr.REDUCED], [0], copy.k)
    assert study.run_study(copy, tasks)["ran"] == 1 + copy.k
    copy.pretrained_path(sr.ROW_BY_NAME[sr.REDUCED], 0).unlink()  # a fresh clone: records, no networks
    assert study.run_study(copy, tasks)["ran"] == 0
    (copy.out / "pretrain" / sr.ROW_BY_NAME[sr.REDUCED].slug / "seed0.json").unlink()
    assert study.run_study(copy, tasks)["ran"] == 1  # the pretraining alone


def test_tiny_study_writes_one_record_per_run(tiny):
    st, tasks, summary = tiny
    assert summary == {"ran": len(tasks), "left": 0, "skipped": []}
    rec = runqueue.read_record(st.out, "runs/deep_remap/seed0_fold1")
    for key in ("config", "seed", "fold", "versions", "data", "device", "wall_s", "predictions"):
        assert key in rec, key
    assert set(rec["predictions"]) == {sr.FULL, *sr.DERIVED_FROM[sr.FULL]}
    test = rec["predictions"][sr.FULL]["test"]
    assert test["id"] == fold_ids(st.folds, 1, "test")  # the held-out fold, nothing else
    assert rec["predictions"]["pretrained only"]["giants"]["id"] == st.giants
    assert rec["config"]["finetune"]["seed"] == studybudgets.member_seed(0, 0) and rec["members"] == 2
    assert set(test["teff"]) == {"median", "p16", "p84", "p2_5", "p97_5", "mean"}  # the PMF's mean too
    lo, med, hi = (np.array(test["logg"][q], dtype=float) for q in ("p16", "median", "p84"))
    assert np.all(lo <= med) and np.all(med <= hi)
    chi2 = [runqueue.read_record(st.out, f"runs/chi2_grid_fit/seed0_fold{f}")["predictions"]["chi2 grid fit"]
            for f in (0, 1)]
    assert "giants" in chi2[0] and "giants" not in chi2[1]
    assert runqueue.is_done(st.out, "pretrain/no_swa/seed0")
    assert st.pretrained_path(sr.ROW_BY_NAME["no SWA"], 0).is_file()
    assert not (st.work / "runs" / "runs" / "deep_remap" / "seed0_fold1").exists()  # checkpoints cleaned up


def test_tiny_study_fits_coverage_temperatures_and_rehearses_on_the_grid(tiny):
    st, _, _ = tiny
    rec = runqueue.read_record(st.out, "runs/deep_remap/seed0_fold0")
    shared = rec["coverage_temperatures"]
    assert set(shared) == {"teff", "logg", "feh"} and all(0 < t for t in shared.values())
    assert rec["predictions"][sr.COVERAGE]["test"]["id"] == rec["predictions"][sr.FULL]["test"]["id"]
    rehearsed = runqueue.read_record(st.out, "runs/synthetic_rehearsal/seed0_fold0")
    assert "synthetic" in rehearsed["data"] and "synthetic" not in rec["data"]  # it read the grid
    assert rehearsed["predictions"][sr.REHEARSAL]["test"]["id"] == rec["predictions"][sr.FULL]["test"]["id"]
    assert set(rehearsed["predictions"]) == {sr.REHEARSAL, *sr.DERIVED_FROM[sr.REHEARSAL]}


def test_tiny_study_scores_the_noise_row_and_rehearsal_on_the_same_noisy_stars(tiny):
    st, _, _ = tiny
    noise = sr.ROW_BY_NAME[sr.NOISE]
    assert st.budgets.finetune(noise, 0).augment == AugmentConfig.none()  # the tests' override wins
    rehearsed = runqueue.read_record(st.out, "runs/synthetic_rehearsal/seed0_fold0")["predictions"]
    clean, noisy = rehearsed[sr.REHEARSAL]["test"], rehearsed[sr.at_snr(sr.REHEARSAL, 10)]["test"]
    assert noisy["id"] == clean["id"] and noisy["truth"] == clean["truth"]
    assert study.plan([sr.at_snr(sr.NOISE, 20)], [0], 2)[0].key == "runs/noise_matched_augmentation/seed0_fold0"
    assert studybudgets.Budgets.from_profiles("default").finetune(noise, 1).augment.snr_range == (5.0, 400.0)


def test_tiny_study_distils_the_giants_without_their_labels(tiny, monkeypatch):
    st, _, _ = tiny
    rec = runqueue.read_record(st.out, "runs/giant_distillation/seed0_fold1")
    assert set(rec["predictions"]) == {sr.DISTILL, *sr.DERIVED_FROM[sr.DISTILL]}
    assert rec["predictions"][sr.DISTILL]["giants"]["id"] == st.giants
    assert rec["data"]["pretrained_deep-remap_weights"] == load_model(st.pretrained["deep-remap"])[1]["weights_sha256"]
    assert sr.ROW_BY_NAME[sr.at_snr(sr.DISTILL, 10)].reference == sr.at_snr(sr.REHEARSAL, 10)
    seen = {}

    def spy(*args):
        seen["distill"], seen["ratio"], seen["labels"] = args[-3:]
        raise RuntimeError("stop")

    monkeypatch.setattr(studyruns, "finetune", spy)
    with pytest.raises(RuntimeError, match="stop"):
        studyruns._train_members(st, sr.ROW_BY_NAME[sr.DISTILL], st.pretrained["deep-remap"], st.fold_sets(0),
                             st.budgets.finetune(sr.ROW_BY_NAME[sr.DISTILL], 0), 1, st.work / "spy")
    assert list(seen["distill"].ids) == st.giants and np.isnan(seen["distill"].labels).all()
    assert seen["ratio"] == DISTILL_RATIO > 0 and seen["labels"] == ("teff", "logg", "feh")
    logg_row = sr.ROW_BY_NAME[sr.NOISE_DISTILL_LOGG]
    with pytest.raises(RuntimeError, match="stop"):
        studyruns._train_members(st, logg_row, st.pretrained["deep-remap"], st.fold_sets(0),
                             st.budgets.finetune(logg_row, 0), 1, st.work / "spy")
    assert seen["labels"] == ("logg",) and logg_row.reference == sr.NOISE_DISTILL
    # held out: fold 0 distils the other fold's giants and is scored on its own
    sets = st.fold_sets(0, giants_held_out=True)
    scored, distilled = list(sets["giants"].ids), list(sets["distill"].ids)
    assert scored and distilled and not set(scored) & set(distilled)
    assert sorted(scored + distilled) == sorted(st.giants)
    held_row = dataclasses.replace(sr.ROW_BY_NAME[sr.DISTILL], giants_held_out=True)
    with pytest.raises(RuntimeError, match="stop"):
        studyruns._train_members(st, held_row, st.pretrained["deep-remap"], sets,
                             st.budgets.finetune(held_row, 0), 1, st.work / "spy")
    assert list(seen["distill"].ids) == distilled and np.isnan(seen["distill"].labels).all()


def test_tiny_study_rerun_skips_finished_runs_and_waits_for_claimed_ones(tiny):
    st, tasks, _ = tiny
    assert study.run_study(st, tasks) == {"ran": 0, "left": 0, "skipped": []}
    path = runqueue.record_path(st.out, tasks[-1].key)
    saved = path.read_text()
    path.unlink()
    claim = runqueue.claim_path(st.claims, tasks[-1].key)
    claim.parent.mkdir(parents=True, exist_ok=True)
    claim.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": "now"}))
    try:  # held by a live process: not run, the runner gives up at its time limit
        assert study.run_study(st, tasks, max_minutes=0.001, poll_s=0.01) == {"ran": 0, "left": 1, "skipped": []}
    finally:
        claim.unlink()
        path.write_text(saved)


def test_tiny_study_aggregates_into_the_table_schema(tiny, monkeypatch):
    st, _, _ = tiny
    # the tiny study has no run of remap's recipe: compare a row it ran; a pair without records is left out
    monkeypatch.setattr(sr, "COMPARISONS", ((sr.DISTILL, "MSE regression CNN"), (sr.NOISE_DISTILL, "The Cannon")))
    result = studystats.aggregate(st.out, st.folds, n_boot=50)
    rows = {r["name"]: r for r in result["rows"]}
    assert [r["name"] for r in result["rows"]] == [r.name for r in sr.ROWS]
    full = rows[sr.FULL]
    assert full["n_seeds"] == 1 and rows["no SWA"]["paired"]["reference"] == sr.REDUCED
    for table in studystats.TABLES:
        assert full[table]["n"] > 0
        for label in LABEL_NAMES:
            entry = full[table][label]
            assert {"sigma", "bias", "mad", "ci95", "coverage68", "coverage95"} <= set(entry)
            assert len(entry["ci95"]) == 2
    assert 0.0 <= full["giants"]["accuracy"] <= 1.0
    assert rows["chi2 grid fit"]["giants"]["n_seeds"] == 1
    [comparison] = result["comparisons"]
    assert (comparison["row"], comparison["reference"]) == (sr.DISTILL, "MSE regression CNN")
    sigma = comparison["cv_dwarfs"]["teff"]["sigma"]
    assert sigma["difference"] == pytest.approx(rows[sr.DISTILL]["cv_dwarfs"]["teff"]["sigma"]
                                                - rows["MSE regression CNN"]["cv_dwarfs"]["teff"]["sigma"])
    assert len(sigma["ci95"]) == 2 and "accuracy" in comparison["giants"]
    status = studystatus.status(st.out, st.claims, study.plan([r.name for r in sr.ROWS], [0], st.k))
    assert status["rows"][sr.FULL] == {"done": 2, "running": 0, "left": 0}
    assert "pretrain (reduced budget)" in status["measured"] and status["hours"]["left"] > 0


def test_runs_without_their_start_network_are_skipped_not_fatal(tiny, tmp_path):
    st, _, _ = tiny
    bare = dataclasses.replace(st, pretrained={"deep-remap": st.pretrained["deep-remap"]}, out=tmp_path / "out",
                               work=tmp_path / "work", hashes={})
    tasks = study.plan(["MSE regression CNN", "chi2 grid fit"], [0], bare.k)
    result = study.run_study(bare, tasks)
    assert result["ran"] == 2 and result["left"] == 2
    assert result["skipped"] == ["runs/mse_regression_cnn/seed0_fold0", "runs/mse_regression_cnn/seed0_fold1"]
    assert runqueue.live_claims(bare.claims) == {}  # the skipped runs' claims are released


def test_study_command_aggregates_and_reports_status(tiny, capsys):
    from remap_lib import cli

    st, _, _ = tiny
    assert cli.main(["study", "aggregate", "--out", str(st.out), "--bootstrap", "20"]) == 0
    written = json.loads((st.out.parent / "study.json").read_text())
    full = next(r for r in written["rows"] if r["name"] == sr.FULL)
    assert full["giants"]["n"] == len(st.giants) and full["cv_dwarfs"]["n"] == len(st.folds)
    assert written["bootstrap"]["resamples"] == 20 and "reduced" in written["budgets"]
    n_files = len(list((st.out / "runs").rglob("*.json"))) + len(list((st.out / "pretrain").rglob("*.json")))
    assert written["compute"]["runs"] == n_files and written["compute"]["by_kind"]["pretrain"]["runs"] >= 1
    assert written["compute"]["cpu_hours"] > 0
    assert cli.main(["study", "status", "--out", str(st.out), "--seeds", "0", "--folds", "2"]) == 0
    out = capsys.readouterr().out
    assert "deep-REMAP" in out and "measured time per run" in out and "h left" in out
    assert cli.main(["study", "table", "--out", str(st.out)]) == 0
    out = capsys.readouterr().out
    assert "| the paper (MARVELS, R ≈ 11000) |" in out and "### cross-validated MILES FGK dwarfs" in out
    assert f"| {sr.FULL} | {len(st.folds)} | 1 |" in out  # the tiny study ran one seed
    assert cli.main(["study", "goals", "--out", str(st.out), "--row", sr.DISTILL]) == 0
    out = capsys.readouterr().out
    assert "| σ T<sub>eff</sub>, cross-validated MILES FGK dwarfs | ≤ 75 K |" in out
    assert "| dwarfs that stay dwarfs | ≥ 95 % |" in out and f"Row *{sr.DISTILL}*" in out


def test_paired_interval_resamples_seeds_as_well_as_stars(tmp_path):
    folds = make_folds(splits_table(20, giants=0), k=2, seed=0)
    truth = np.column_stack([folds.teff, np.full(20, 4.4), np.zeros(20)])
    records = []
    for seed, offset in ((0, 50.0), (1, 150.0)):  # the variant's bias differs between its two seeds
        for f in (0, 1):
            rows = np.flatnonzero(folds.fold == f)
            ids = folds.id.to_numpy()[rows]
            records.append(record(sr.FULL, seed, f, ids, truth[rows], truth[rows]))
            records.append(record("one member", seed, f, ids, truth[rows], truth[rows] + [offset, 0.0, 0.0]))
    write_records(tmp_path, records)
    one = next(r for r in studystats.aggregate(tmp_path, folds, n_boot=400)["rows"] if r["name"] == "one member")
    bias = one["paired"]["cv_dwarfs"]["teff"]["bias"]
    assert bias["difference"] == pytest.approx(100.0)
    assert bias["std"] == pytest.approx(np.std([50.0, 150.0], ddof=1))
    # star resampling alone would give [100, 100]; drawing the two seeds with replacement spans 50 ... 150
    assert bias["ci95"] == pytest.approx([50.0, 150.0])
    assert one["paired"]["cv_dwarfs"]["interval_resamples_seeds"]


def test_models_interval_resamples_the_giants_fold_models(tmp_path):
    folds = make_folds(splits_table(20, giants=0), k=2, seed=0)
    truth = np.column_stack([folds.teff, np.full(20, 4.4), np.zeros(20)])
    giant_ids = [f"g{i}" for i in range(10)]
    giant_truth = np.column_stack([np.full(10, 4800.0), np.full(10, 2.5), np.zeros(10)])
    records = []
    for f, called in ((0, 4.4), (1, 2.5)):  # fold 0's model calls every giant a dwarf, fold 1's every one a giant
        giants = record(sr.FULL, 0, f, giant_ids, giant_truth,
                        giant_truth * [1, 0, 1] + [0, called, 0])["predictions"][sr.FULL]["test"]
        rows = np.flatnonzero(folds.fold == f)
        records.append(record(sr.FULL, 0, f, folds.id.to_numpy()[rows], truth[rows], truth[rows], giants))
    write_records(tmp_path, records)
    full = next(r for r in studystats.aggregate(tmp_path, folds, n_boot=400)["rows"] if r["name"] == sr.FULL)
    giants = full["giants"]
    assert giants["accuracy"] == pytest.approx(0.5)
    # every star is called the same by each model, so resampling stars (and the one seed) cannot move it ...
    assert giants["accuracy_ci95"] == pytest.approx([0.5, 0.5])
    # ... but drawing the two fold models with replacement gives 0, 1/2 or 1
    assert giants["ci95_models"]["accuracy"] == pytest.approx([0.0, 1.0])
    assert giants["ci95_models"]["logg"]["bias"] == pytest.approx([0.0, 1.9])
    assert "ci95_models" not in full["cv_dwarfs"]  # one model per dwarf: nothing more to resample
