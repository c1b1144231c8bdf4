"""Predictions and their scores: noise injection, bias/σ/MAD, interval coverage, the S/N table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from remap_lib.data.dataset import LABEL_NAMES, SpectraSet
from remap_lib.evaluation.evaluate import add_noise, interval_coverage, predict, scatter_metrics, snr_table
from remap_lib.nn.binning import DEFAULT_BINS
from remap_lib.spectra.instruments import Instrument
from remap_lib.training.train import build_model

TINY_ARCH = dict(stem_channels=4, stage_channels=(4, 8), kernel_size=3, embedding_dim=4)
INSTRUMENT = Instrument("tiny", 5000.0, 5114.0, medium="air", fwhm=2.5, pixel=0.9)


def tiny_set(n=6):
    rng = np.random.default_rng(0)
    wave = INSTRUMENT.wavelength_grid()
    flux = (1 - 0.3 * np.exp(-0.5 * ((wave - 5050) / 1.5) ** 2) * rng.uniform(0.5, 1, (n, 1))).astype(np.float32)
    labels = np.column_stack([rng.uniform(4000, 7000, n), rng.uniform(1, 5, n), rng.uniform(-2, 0.5, n)])
    return SpectraSet(wave, flux, np.full(flux.shape, np.inf), np.zeros(flux.shape, bool), labels,
                      np.array([f"s{i}" for i in range(n)]), INSTRUMENT)


# ---------------------------------------------------------------- add_noise
def test_add_noise_sigma_reproducible_and_masked_pixels():
    flux = np.full((20, 5000), 0.8)
    mask = np.zeros(flux.shape, bool)
    mask[:, :100] = True
    a, m = add_noise(flux, mask, snr=50.0, seed=3)
    b, _ = add_noise(flux, mask, snr=50.0, seed=3)
    c, _ = add_noise(flux, mask, snr=50.0, seed=4)
    assert a.dtype == np.float32 and m.dtype == bool and np.array_equal(m, mask)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(a[mask] == 1.0)
    resid = a[~mask] - 0.8
    assert np.std(resid) == pytest.approx(1 / 50, rel=0.02)
    assert abs(np.mean(resid)) < 1e-3
    assert np.std(add_noise(flux, mask, snr=10.0)[0][~mask] - 0.8) == pytest.approx(0.1, rel=0.02)


# ---------------------------------------------------------------- scatter_metrics / interval_coverage
def test_scatter_metrics_hand_numbers():
    truth = np.array([[5000.0, 4.0, 0.0], [5000.0, 4.0, 0.0], [5000.0, 4.0, 0.0], [np.nan, 4.0, 0.0]])
    errors = np.array([1.0, -1.0, 3.0, 100.0])  # the last row has unknown Teff: skipped for teff only
    pred = {name: {"median": truth[:, j] + errors, "mean": truth[:, j]} for j, name in enumerate(LABEL_NAMES)}
    pred["teff"]["median"][3] = 123.0
    m = scatter_metrics(pred, truth)
    assert m["teff"] == pytest.approx({"bias": 1.0, "sigma": np.sqrt(8 / 3), "mad": 2.0, "n": 3, "n_failed": 0})
    assert m["teff"]["sigma"] == pytest.approx(1.633, abs=1e-3)
    # errors [1, -1, 3, 100]: bias 25.75, median 2, |e - 2| = [1, 3, 1, 98] -> MAD 2
    assert m["logg"]["n"] == 4 and m["logg"]["bias"] == pytest.approx(25.75) and m["logg"]["mad"] == pytest.approx(2)
    assert scatter_metrics(pred, truth, estimate="mean")["feh"] == pytest.approx(
        {"bias": 0.0, "sigma": 0.0, "mad": 0.0, "n": 4, "n_failed": 0})
    # a missing prediction is counted, not silently dropped
    pred["feh"]["median"][0] = np.nan
    assert scatter_metrics(pred, truth)["feh"]["n_failed"] == 1


def test_interval_coverage_hand_example():
    truth = np.column_stack([[0.0, 1.0, 2.0, 3.0, np.nan]] * 3)
    one = {"p16": np.array([-1.0, 2.0, 1.0, 4.0, 0.0]), "p84": np.array([1.0, 3.0, 3.0, 5.0, 0.0]),
           "p2_5": np.array([-10.0, -10.0, -10.0, -10.0, 0.0]), "p97_5": np.array([10.0, 10.0, 10.0, 2.5, 0.0]),
           "pmf": np.zeros((5, 2))}
    cov = interval_coverage({name: one for name in LABEL_NAMES}, truth)
    # inside 68 %: rows 0 and 2 (edges count); inside 95 %: rows 0-2; the NaN row is skipped
    assert cov["teff"] == {"68": 0.5, "95": 0.75}


# ---------------------------------------------------------------- predict / snr_table
def test_predict_regression_destandardizes_with_label_stats():
    data = tiny_set()
    torch.manual_seed(0)
    model = build_model(data.flux.shape[1], head="regression", **TINY_ARCH).eval()
    stats = ([5000.0, 3.0, -0.5], [1000.0, 1.0, 0.5])
    with torch.no_grad():
        z = model(torch.as_tensor(data.flux))["logits"]
    pred = predict(model, data.flux, label_stats=stats, batch_size=4)
    for j, name in enumerate(LABEL_NAMES):
        want = z[name].numpy() * stats[1][j] + stats[0][j]
        for key in ("mean", "median", "mode", "p16", "p84", "p2_5", "p97_5"):
            np.testing.assert_allclose(pred[name][key], want, rtol=1e-5)
        assert np.all(np.isnan(pred[name]["std"]))
    # a different standardization shifts and scales the answer accordingly
    other = predict(model, data.flux, label_stats=([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]))
    np.testing.assert_allclose(other["teff"]["median"], z["teff"].numpy(), rtol=1e-5)


def test_predict_classification_decodes_softmax():
    data = tiny_set()
    torch.manual_seed(0)
    model = build_model(data.flux.shape[1], **TINY_ARCH)
    pred = predict(model, data.flux, data.mask, return_pmf=True, return_embedding=True, batch_size=4)
    with torch.no_grad():
        z = model.eval()(torch.as_tensor(data.flux))["logits"]
    for name in LABEL_NAMES:
        pmf = torch.softmax(z[name], -1).numpy()
        np.testing.assert_allclose(pred[name]["pmf"], pmf, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(pred[name]["median"], DEFAULT_BINS[name].decode(pmf)["median"], rtol=1e-6)
    assert pred["embedding"].shape == (6, 4)
    assert "pmf" not in predict(model, data.flux)["teff"]


def test_snr_table_rows_and_reproducibility():
    data = tiny_set()
    torch.manual_seed(0)
    model = build_model(data.flux.shape[1], **TINY_ARCH)
    table = snr_table(model, data, snrs=(20.0, 100.0), seed=1)
    assert list(table.columns) == ["snr", "label", "bias", "sigma", "mad", "n", "n_failed"]
    assert list(table["snr"]) == [20.0] * 3 + [100.0] * 3
    assert list(table["label"]) == list(LABEL_NAMES) * 2
    assert (table["n"] == 6).all()
    again = snr_table(model, data, snrs=(20.0, 100.0), seed=1)
    assert table.equals(again)
    # the row at S/N 20 equals scoring the same noisy spectra by hand
    flux, mask = add_noise(data.flux, data.mask, 20.0, seed=1)
    by_hand = scatter_metrics(predict(model, flux, mask), data.labels)["logg"]
    row = table[(table.snr == 20.0) & (table.label == "logg")].iloc[0]
    assert row["sigma"] == pytest.approx(by_hand["sigma"]) and row["bias"] == pytest.approx(by_hand["bias"])


def test_score_row_adds_calibration_only_for_pmfs():
    from remap_lib.evaluation.evaluate import score_row

    truth = np.array([[5025.0, 4.05, 0.025], [6025.0, 2.05, -0.975]])  # bin centres
    point = {n: {"median": truth[:, j] + 1.0} for j, n in enumerate(LABEL_NAMES)}
    row = score_row("peer", point, truth)
    assert row["method"] == "peer" and row["bias_teff"] == pytest.approx(1.0) and row["sigma_teff"] == 0.0
    assert "ece_teff" not in row
    pmf = {n: DEFAULT_BINS[n].soft_targets(truth[:, j], None) for j, n in enumerate(LABEL_NAMES)}
    probabilistic = {n: {**DEFAULT_BINS[n].decode(pmf[n]), "pmf": pmf[n]} for n in LABEL_NAMES}
    row = score_row("ours", probabilistic, truth)
    assert row["cov68_logg"] == 1.0  # truth at the centre of a one-hot bin: covered at every level
    assert 0 <= row["ece_teff"] <= 1


def test_giant_dwarf_split_by_hand():
    from remap_lib.evaluation.evaluate import giant_dwarf_split

    truth = np.array([[4800.0, 2.5, 0.0], [4800.0, 2.0, 0.0], [5800.0, 4.4, 0.0], [5800.0, 4.5, 0.0]])
    logg = np.array([2.6, 3.8, 4.3, 3.0])  # 2nd giant called dwarf, 4th dwarf called giant
    pred = {n: {"median": truth[:, j].copy()} for j, n in enumerate(LABEL_NAMES)}
    pred["logg"]["median"] = logg
    out = giant_dwarf_split(pred, truth, logg_boundary=3.5)
    assert out["called_giant"].tolist() == [True, False, False, True]
    assert out["fraction_called_giant"] == 0.5 and out["accuracy"] == 0.5 and out["n"] == 4
    assert "p_giant" not in out


def test_point_predictions_are_scored_as_medians():
    from remap_lib.evaluation.evaluate import point_predictions, score_row

    truth = np.array([[5000.0, 4.0, 0.0], [6000.0, 2.0, -1.0]])
    pred = point_predictions([[5010.0, 4.5, 0.0], [6030.0, 2.5, -1.0]])
    assert list(pred) == list(LABEL_NAMES) and pred["logg"]["median"].tolist() == [4.5, 2.5]
    row = score_row("peer", pred, truth)
    assert row["bias_teff"] == pytest.approx(20.0) and row["sigma_teff"] == pytest.approx(10.0)
    assert row["bias_logg"] == pytest.approx(0.5) and row["sigma_logg"] == pytest.approx(0.0)
