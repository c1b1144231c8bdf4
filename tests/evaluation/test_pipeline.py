"""remap_lib.evaluation.pipeline: fine-tune → calibrate → validate → export on toy stars, as the CLI runs them."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import toydata
from toydata import INSTRUMENT, TINY_ARCH
from toymodel import ConstantLogits

from remap_lib import Predictor
from remap_lib.data.dataset import LABEL_NAMES, SpectraSet, write_dataset
from remap_lib.data.splits import COLUMNS
from remap_lib.evaluation import pipeline
from remap_lib.nn.binning import DEFAULT_BINS, LabelBins
from remap_lib.nn.modelfile import load_members, load_model, save_model
from remap_lib.training.train import build_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A toy 'MILES' file whose 40 stars are dwarfs split into roles, and a pretrained tiny model."""
    tmp = tmp_path_factory.mktemp("pipe")
    data = toydata.toy_set(40, seed=2, id_prefix="m", kind="observed")
    data.labels[:, 1] = np.where(np.arange(40) < 34, 4.4, 2.5)  # last 6 are giants
    data.labels[:, 0] = np.clip(data.labels[:, 0], 4100, 6900)
    write_dataset(tmp / "miles.h5", data)
    write_dataset(tmp / "synthetic.h5", toydata.toy_set(24, seed=3))  # what the default fine-tuning rehearses
    roles = ["finetune"] * 22 + ["validation"] * 6 + ["calibration"] * 6 + ["giant_candidate"] * 6
    splits = pd.DataFrame({c: "" for c in COLUMNS}, index=range(40))
    splits["id"], splits["role"] = list(data.ids), roles
    splits["teff"], splits["logg"], splits["feh"] = data.labels.T
    splits["snr"], splits["cluster"] = 100.0, False
    from remap_lib.data.splits import write_splits

    write_splits(splits, tmp / "splits.csv")
    torch.manual_seed(0)
    model = build_model(data.flux.shape[1], DEFAULT_BINS, **TINY_ARCH)
    pre = save_model(tmp / "pretrained.pt", model, DEFAULT_BINS, INSTRUMENT)
    return tmp, pre


def test_finetune_calibrate_validate_export(setup):
    tmp, pre = setup
    members = pipeline.finetune(pre, tmp / "miles.h5", tmp / "ft", "smoke", tmp / "splits.csv", progress=False,
                                members=2, epochs=1, batch_size=8)
    assert [m.name for m in members] == ["member_0.pt", "member_1.pt"]
    assert pipeline.member_files(tmp / "ft", calibrated=False) == members

    calibrated, temps = pipeline.calibrate(members, tmp / "miles.h5", tmp / "splits.csv")
    assert [c.name for c in calibrated] == ["member_0_calibrated.pt", "member_1_calibrated.pt"]
    _, info = load_model(calibrated[1])
    assert info["extra"]["temperatures"] == temps[1]
    assert json.loads((tmp / "ft" / "temperatures.json").read_text()) == temps
    assert all(0.05 <= t <= 20 for d in temps for t in d.values())

    report = pipeline.validate(calibrated, tmp / "miles.h5", tmp / "splits.csv")
    assert set(report) == {"calibration", "validation", "giant_candidate"}
    assert report["calibration"]["n"] == 6 and report["calibration"]["teff"]["n"] == 6
    assert 0 <= report["giant_candidate"]["fraction_called_giant"] <= 1
    table = pipeline.report_table(report)
    assert len(table) == 9 and {"sigma", "coverage_68", "ece_interval"} <= set(table.columns)

    out = pipeline.export(calibrated, tmp / "miles.h5", tmp / "bundle.pt", tmp / "splits.csv")
    pairs, bundle = load_members(out)
    assert len(pairs) == 2
    ref = bundle["reference"]
    assert tuple(ref["embedding"].shape) == (22, TINY_ARCH["embedding_dim"]) and len(ref["ids"]) == 22
    assert 0 <= ref["threshold"] <= 2
    p = Predictor(out)
    assert p.temperatures == temps
    # the threshold is the 0.99 quantile of the unseen stars' distances: at most one of 12 lies above it
    from remap_lib.data.dataset import read_dataset
    from remap_lib.training.transfer import by_role

    sets = by_role(read_dataset(tmp / "miles.h5"), pd.read_csv(tmp / "splits.csv", comment="#", dtype=str))
    unseen = [sets["validation"], sets["calibration"]]
    flags = np.concatenate([p.predict((s.wave, s.flux))["out_of_domain"] for s in unseen])
    assert flags.sum() <= 1


def test_finetune_distils_the_giant_candidates_without_their_labels(setup, tmp_path, monkeypatch):
    tmp, pre = setup
    members = pipeline.finetune(pre, tmp / "miles.h5", tmp_path / "ft", "smoke", tmp / "splits.csv", progress=False,
                                members=1, epochs=1, batch_size=8, distill=0.25)
    _, info = load_model(members[0])
    assert info["extra"]["distill_ratio"] == 0.25
    seen = {}
    real = pipeline.finetune_ensemble

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "finetune_ensemble", spy)
    pipeline.finetune(pre, tmp / "miles.h5", tmp_path / "ft", "smoke", tmp / "splits.csv", progress=False,
                      members=1, epochs=1, batch_size=8, distill=0.25)  # resumes the finished checkpoint
    assert len(seen["distill"]) == 6 and np.isnan(seen["distill"].labels).all()  # the six giant candidates
    assert seen["distill_labels"] == ("teff", "logg")  # the profile's: remap's recipe, not [Fe/H]
    monkeypatch.setattr(pipeline, "finetune_ensemble", real)
    members = pipeline.finetune(pre, tmp / "miles.h5", tmp_path / "ft_logg", "smoke", tmp / "splits.csv",
                                progress=False, members=1, epochs=1, batch_size=8, distill=0.25,
                                distill_labels=["logg"])
    assert load_model(members[0])[1]["extra"]["distill_labels"] == ["logg"]


def test_member_files_says_which_command_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="remap calibrate"):
        pipeline.member_files(tmp_path, calibrated=True)
    with pytest.raises(FileNotFoundError, match="remap finetune"):
        pipeline.member_files(tmp_path, calibrated=False)


def test_coverage_calibration_shares_one_temperature_per_head(setup, tmp_path):
    tmp, pre = setup
    members = pipeline.finetune(pre, tmp / "miles.h5", tmp_path / "ft", "smoke", tmp / "splits.csv", progress=False,
                                members=2, epochs=1, batch_size=8)
    calibrated, temps = pipeline.calibrate(members, tmp / "miles.h5", tmp / "splits.csv", method="coverage")
    assert temps[0] == temps[1] and set(temps[0]) == {"teff", "logg", "feh"}
    assert all(0.05 <= t <= 20 for t in temps[0].values())
    assert load_model(calibrated[0])[1]["extra"]["calibration"] == "coverage"
    with pytest.raises(ValueError, match="unknown calibration method 'mse'"):
        pipeline.calibrate(members, tmp / "miles.h5", tmp / "splits.csv", method="mse")


def test_member_files_orders_by_number_past_nine(tmp_path):
    for name in ("member_10.pt", "member_2.pt", "member_0.pt", "member_2_calibrated.pt", "member_10_calibrated.pt"):
        (tmp_path / name).touch()
    assert [p.name for p in pipeline.member_files(tmp_path, calibrated=False)] == [
        "member_0.pt", "member_2.pt", "member_10.pt"]
    assert [p.name for p in pipeline.member_files(tmp_path, calibrated=True)] == [
        "member_2_calibrated.pt", "member_10_calibrated.pt"]


def _stars(logg):
    n = len(logg)
    labels = np.column_stack([np.full(n, 1.5), logg, np.full(n, 1.5)])
    return SpectraSet(np.arange(4.0), np.ones((n, 4), np.float32), np.ones((n, 4)), np.zeros((n, 4), bool), labels,
                      np.array([f"s{i}" for i in range(n)]), INSTRUMENT)


def test_role_predictions_and_giant_dwarf_by_role_by_hand():
    bins = {n: LabelBins(n, (0.0, 1.0, 2.0, 3.0)) for n in LABEL_NAMES}  # unit bins, centres 0.5, 1.5, 2.5
    # member 0 at T = ½: softmax(0, 2 ln 2, 0) = (1, 4, 1)/6; member 1 uniform; mean (¼, ½, ¼), median 1.5
    models = [ConstantLogits({n: [0.0, math.log(2.0), 0.0] for n in LABEL_NAMES}),
              ConstantLogits({n: [0.0, 0.0, 0.0] for n in LABEL_NAMES})]
    temps = [{n: 0.5 for n in LABEL_NAMES}, {}]
    sets = {"giant_candidate": _stars([1.0, 2.0, 1.2]), "validation": _stars([2.5, 2.8])}
    pred = pipeline.role_predictions(models, temps, sets, bins, roles=("giant_candidate", "calibration", "validation"))
    assert list(pred) == ["giant_candidate", "validation"]  # roles in the order asked, absent ones skipped
    assert np.allclose(pred["validation"]["teff"]["pmf"], [[0.25, 0.5, 0.25]] * 2)
    assert np.allclose(pred["giant_candidate"]["logg"]["median"], 1.5)
    # every star is called giant (median 1.5 < 1.6); truly giant: 1.0 and 1.2 of the first role, none of the second
    out = pipeline.giant_dwarf_by_role(pred, sets, bins, logg_boundary=1.6)
    assert out["giant_candidate"]["fraction_called_giant"] == 1.0 and out["giant_candidate"]["n"] == 3
    assert out["giant_candidate"]["accuracy"] == pytest.approx(2 / 3)
    assert out["validation"]["accuracy"] == 0.0
    assert out["validation"]["mean_p_giant"] == pytest.approx(0.75)  # mass of the centres 0.5 and 1.5
    assert "called_giant" not in out["validation"] and "p_giant" not in out["validation"]  # no per-star arrays


def test_rehearsal_without_the_synthetic_file_says_what_to_run(tmp_path):
    with pytest.raises(pipeline.RemapDataError, match=r"synthetic\.h5.*run `remap prepare`.*--rehearsal 0"):
        pipeline.rehearsal_set(tmp_path / "synthetic.h5")


def test_finetune_passes_the_swa_batch_norm_choice(setup, tmp_path, monkeypatch):
    tmp, pre = setup
    configs = []
    monkeypatch.setattr(pipeline, "finetune_ensemble", lambda *args, **kwargs: configs.append(args[3]) or [])
    for choice in (None, "epoch"):
        extra = {} if choice is None else {"swa_bn_rows": choice}
        pipeline.finetune(pre, tmp / "miles.h5", tmp_path / "ft", "smoke", tmp / "splits.csv", progress=False, **extra)
    assert [c.swa_bn_rows for c in configs] == ["training", "epoch"]  # the profile's, then the override
