import json

import numpy as np
import pytest

from remap_lib.constants import LABEL_NAMES
from remap_lib.evaluation.conformal import cross_fold_predictions, fit_factors, interval_scores, scale_intervals

DWARF = np.array([0.0, 10.0, 0.0])  # added to every number of a label: log g 10 and up, a star called dwarf


def preds(med, p16, p84, p2_5, p97_5, offset=DWARF):
    """(n, 3, 5) predictions with the same numbers for every label (order: median, p16, p84, p2_5, p97_5),
    plus ``offset`` per label."""
    one = np.column_stack([med, p16, p84, p2_5, p97_5]).astype(float)
    return np.repeat(one[:, None, :], 3, axis=1) + offset[None, :, None]


def truths(values, offset=DWARF):
    return np.repeat(np.asarray(values, dtype=float)[:, None], 3, axis=1) + offset


def test_scores_are_distances_in_half_widths_on_the_side_of_the_truth():
    pred = preds([0, 0, 0, 0], [-1, -1, -2, -1], [1, 1, 1, 1], [-2, -2, -4, -2], [2, 2, 2, 2])
    truth = truths([0.5, -1.5, 3.0, np.nan])
    s68 = interval_scores(pred, truth, "68")[:, 0]
    assert s68[:3].tolist() == [0.5, 1.5, 3.0] and np.isnan(s68[3])
    assert interval_scores(pred, truth, "95")[:3, 0].tolist() == [0.25, 0.75, 1.5]
    # a zero half-width: the truth on the median scores 0, beyond it inf
    flat = preds([1, 1], [1, 1], [1, 1], [1, 1], [1, 1])
    assert interval_scores(flat, truths([1.0, 2.0]), "68")[:, 0].tolist() == [0.0, np.inf]


def test_factor_is_the_conformal_rank_of_the_scores():
    pred = preds([0] * 4, [-1] * 4, [1] * 4, [-2] * 4, [2] * 4)
    truth = truths([0.5, -1.5, 3.0, 0.2])
    f = fit_factors(pred, truth)
    # 68 %: rank ceil(5 x 0.68) = 4 of the sorted 0.2, 0.5, 1.5, 3 -> 3; 95 %: rank 5 > 4 -> the largest, 1.5
    assert f["68"].tolist() == [3.0] * 3 and f["95"].tolist() == [1.5] * 3
    nine = preds([0] * 9, [-1] * 9, [1] * 9, [-2] * 9, [2] * 9)
    scores = np.arange(1, 10) / 10  # 0.1 ... 0.9
    f = fit_factors(nine, truths(scores))
    assert f["68"][0] == pytest.approx(0.7)  # ceil(10 x 0.68) = 7th
    # stars called giants are neither fitted on nor scaled
    giants = preds([0] * 9, [-1] * 9, [1] * 9, [-2] * 9, [2] * 9, offset=np.zeros(3))
    both = fit_factors(np.concatenate([nine, giants]),
                       np.concatenate([truths(scores), truths(scores * 30, np.zeros(3))]))
    assert both["68"][0] == pytest.approx(0.7)
    assert scale_intervals(giants, both)[0, 0].tolist() == [0, -1, 1, -2, 2]
    assert np.isnan(fit_factors(nine, np.full((9, 3), np.nan))["68"]).all()


def test_scaling_keeps_the_median_and_the_asymmetry():
    pred = preds([10], [8], [11], [6], [13], offset=np.zeros(3))  # log g 10: called dwarf
    out = scale_intervals(pred, {"68": np.full(3, 2.0), "95": np.full(3, 0.5)})
    assert out[0, 0].tolist() == [10, 6, 12, 8, 11.5]
    assert pred[0, 0].tolist() == [10, 8, 11, 6, 13]  # input untouched


def test_cross_fold_factors_never_see_their_own_fold():
    # fold 0 stars all miss badly, fold 1 stars sit on their medians
    pred = preds([0] * 6, [-1] * 6, [1] * 6, [-2] * 6, [2] * 6)
    truth = truths([5.0, 5.0, 5.0, 0.0, 0.0, 0.0])
    fold_of = np.array([0, 0, 0, 1, 1, 1])
    giant = preds([3], [2], [4], [1], [5])  # called dwarf too, so it is scaled
    scaled, others, factors = cross_fold_predictions(fold_of, pred, truth, {0: giant, 1: giant})
    assert factors[0]["68"].tolist() == [0.0] * 3  # fitted on fold 1: the truths on the medians
    assert factors[1]["68"].tolist() == [5.0] * 3  # fitted on fold 0: five half-widths off
    assert scaled[0, 0].tolist() == [0, 0, 0, 0, 0] and scaled[3, 0, 1] == -5.0
    assert others[0][0, 0, :3].tolist() == [3, 3, 3] and others[1][0, 0, :3].tolist() == [3, -2, 8]


def test_the_command_fits_the_models_factors_from_the_study_records_without_the_calibration_stars(tmp_path,
                                                                                                   monkeypatch):
    import pandas as pd
    from toymodel import toy_ensemble

    from remap_lib.constants import LABEL_NAMES
    from remap_lib.evaluation import conformal, runqueue
    from remap_lib.evaluation.folds import make_folds, write_folds
    from remap_lib.evaluation.studyrows import SHIPPED_ROW, at_snr
    from remap_lib.prediction.widening import Widening, widening_path

    n = 20
    role = ["finetune"] * 14 + ["calibration"] * 3 + ["validation"] * 3
    splits = pd.DataFrame({"id": [f"m{i:04d}" for i in range(n)], "teff": np.linspace(4000, 7000, n), "role": role})
    folds = make_folds(splits, k=2, seed=0)
    write_folds(folds, tmp_path / "folds.csv")
    # every star misses by 0.5 half-widths, except the calibration stars, which miss by 10; on the
    # noisy copies (the row at S/N 20) every other star misses by 1.5
    calibration = (folds["role"] == "calibration").to_numpy()

    def part(rows, truth, miss):
        out = {"id": folds["id"].to_numpy()[rows].tolist(),
               "truth": {name: truth[:, j].tolist() for j, name in enumerate(LABEL_NAMES)}}
        for j, name in enumerate(LABEL_NAMES):
            med = truth[:, j] + miss  # half-widths 1 (68 %) and 2 (95 %)
            out[name] = {"median": med.tolist(), "p16": (med - 1).tolist(), "p84": (med + 1).tolist(),
                         "p2_5": (med - 2).tolist(), "p97_5": (med + 2).tolist()}
        return out

    for f in (0, 1):
        rows = np.flatnonzero(folds["fold"] == f)
        truth = np.column_stack([folds["teff"].to_numpy()[rows], np.full(len(rows), 4.4), np.zeros(len(rows))])
        predictions = {SHIPPED_ROW: {"test": part(rows, truth, np.where(calibration[rows], 10.0, 0.5))},
                       at_snr(SHIPPED_ROW, 20): {"test": part(rows, truth, np.where(calibration[rows], 10.0, 1.5))}}
        runqueue.write_record(tmp_path, f"runs/shipped/seed0_fold{f}",  # the shipped recipe's row, by default
                              {"key": f"runs/shipped/seed0_fold{f}", "row": SHIPPED_ROW,
                               "seed": 0, "fold": f, "predictions": predictions})
    monkeypatch.setattr(conformal, "clean_dwarf_snr", lambda folds: 55.0)  # the dwarfs' own S/N, not read here
    model = toy_ensemble(tmp_path / "model")
    report = conformal.main(["--model", str(model), "--records", str(tmp_path), "--no-measure",
                             "--out", str(tmp_path / "conformal.json")])
    fit = report["fit"]
    assert fit["n_stars"] == 17 and fit["n_seeds"] == 1 and "measured" not in report
    assert json.loads((tmp_path / "conformal.json").read_text())["fit"]["factors"]["68"]["teff"] == 0.5
    saved = Widening.load(widening_path(model))
    assert saved.intervals["68"] == {"teff": 0.5, "logg": 0.5, "feh": 0.5}  # the 10-half-width misses left out
    assert saved.intervals["95"]["feh"] == 0.25 and "calibration stars left out" in saved.fitted_by["intervals"]
    # the row at S/N 20 gives the factors there; no row at S/N 10 was recorded, so it has no node
    assert saved.intervals["by_snr"]["snr"] == [55.0, 20.0] and saved.intervals["by_snr"]["68"]["teff"] == [0.5, 1.5]
    assert "at S/N 20" in saved.fitted_by["intervals"] and fit["at_snr"]["20"]["n_stars"] == 17
    with pytest.raises(ValueError, match="no study records of row 'deep-REMAP'"):
        conformal.study_factors(tmp_path, "deep-REMAP", folds)


def test_measure_model_reports_coverage_with_and_without_the_factors(tmp_path):
    from toydata import INSTRUMENT
    from toymodel import toy_ensemble

    from remap_lib.evaluation import conformal
    from remap_lib.fileio import sha256_file
    from remap_lib.prediction.inference import Predictor
    from remap_lib.prediction.widening import Widening, widening_path

    model = toy_ensemble(tmp_path)
    wave = INSTRUMENT.wavelength_grid()
    spectra = [(wave, 1.0 - a * np.exp(-0.5 * ((wave - 5050.0) / 1.5) ** 2)) for a in (0.2, 0.4, 0.6)]
    plain = Predictor(model).predict(spectra)
    # truths on the 68 % interval's upper ends: inside as they are, outside once the factor narrows them
    labels = np.column_stack([np.asarray(plain[f"{n}_p84"], dtype=np.float64) for n in LABEL_NAMES])
    Widening(intervals={"68": {n: 0.5 for n in LABEL_NAMES}}, model_sha256=sha256_file(model)).save(
        widening_path(model))
    report = conformal.measure_model(model, roles=("calibration",), stars=lambda role: (labels, spectra),
                                     snrs=(20.0,))
    entry = report["roles"]["calibration"]
    assert entry["n"] == 3 and report["factors"] == {"68": {n: 0.5 for n in LABEL_NAMES}}
    assert entry["before"]["68"]["teff"] == 1.0
    dwarfs = entry["called_dwarf"]
    assert entry["after"]["68"]["teff"] == pytest.approx(1.0 - dwarfs)  # only stars called dwarfs are narrowed
    noisy = entry["at_snr"]["20"]
    assert set(noisy) == {"called_dwarf", "before", "after"} and report["noise"]["snr"] == [20.0]


def test_measured_snr_spans_the_study_and_issue_13s_levels():
    from remap_lib.evaluation.conformal import measured_snr

    assert measured_snr() == (50.0, 20.0, 10.0, 5.0)
