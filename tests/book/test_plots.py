"""Shared figures: the metrics log reader and the plots, drawn headless with labelled axes and units."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from remap_lib.book import plots  # noqa: E402
from remap_lib.nn.binning import DEFAULT_BINS  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def metrics_csv(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,lr,train_teff,train_total,val_sigma_teff,seconds\n"
                    "1,0.001,2.5,6.0,310.5,1.2\n"
                    "2,0.0005,1.5,4.0,,2.4\n"
                    "3,0.0001,1.0,3.0,150.0,3.6\n")
    return path


def test_read_metrics_columns_and_missing_values(metrics_csv):
    m = plots.read_metrics(metrics_csv)
    assert list(m) == ["epoch", "lr", "train_teff", "train_total", "val_sigma_teff", "seconds"]
    np.testing.assert_array_equal(m["epoch"], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(m["train_total"], [6.0, 4.0, 3.0])
    assert m["val_sigma_teff"][0] == 310.5 and np.isnan(m["val_sigma_teff"][1])  # empty cell -> NaN


def test_learning_curves(metrics_csv):
    axes = plots.learning_curves(plots.read_metrics(metrics_csv))
    assert len(axes) == 4
    assert axes[0].get_xlabel() == "epoch" and axes[0].get_ylabel() == "training loss"
    assert sorted(t.get_text() for t in axes[0].get_legend().get_texts()) == ["teff", "total"]
    assert axes[1].get_ylabel().endswith("[K]") and axes[2].get_ylabel().endswith("[dex]")
    np.testing.assert_array_equal(axes[1].lines[0].get_ydata()[[0, 2]], [310.5, 150.0])
    assert not axes[2].lines  # no val_sigma_logg column: an empty panel, no error
    assert all(ax.get_yscale() == "log" for ax in axes)


def test_confusion_normalized_per_true_bin():
    bins = DEFAULT_BINS["teff"]
    rng = np.random.default_rng(0)
    truth = rng.uniform(4500, 6500, 200)
    fig, ax = plt.subplots()
    im = plots.confusion(ax, truth, truth + rng.normal(0, 80, 200), bins, title="toy")
    assert ax.get_xlabel() == "true " + plots.LABEL_TEX["teff"] and "[K]" in ax.get_ylabel()
    assert ax.get_title() == "toy"
    values = np.asarray(im.get_array()).reshape(bins.nbins, bins.nbins)  # (predicted, true) after the transpose
    col = values.sum(axis=0)
    np.testing.assert_allclose(col[col > 0], 1.0)  # each populated true bin sums to one
    lo, hi = ax.get_xlim()
    assert lo < truth.min() and hi > truth.max() and hi - lo < bins.edges_array[-1] - bins.edges_array[0]


def test_pmf_plot():
    bins = DEFAULT_BINS["logg"]
    p = np.exp(-0.5 * ((bins.centers - 4.2) / 0.2) ** 2)
    p /= p.sum()
    summary = bins.decode(p)
    fig, ax = plt.subplots()
    plots.pmf(ax, p, bins, summary, 0, truth=4.3)
    bars = ax.containers[0]
    assert len(bars) == bins.nbins  # one bar per bin, as tall as its probability
    np.testing.assert_allclose([b.get_height() for b in bars], p)
    assert len(ax.patches) == bins.nbins + 2  # + the 68 % and 95 % bands
    assert ax.get_xlabel() == plots.LABEL_TEX["logg"] and "[dex]" in ax.get_xlabel()
    assert ax.get_ylabel() == "probability"
    xs = sorted(line.get_xdata()[0] for line in ax.lines)
    assert xs == pytest.approx(sorted([summary["median"][0], 4.3]))


def test_error_against_bound_puts_each_node_at_its_bound_and_error():
    bound = np.array([[50.0, 0.1, 0.05], [400.0, 0.8, 0.3], [np.nan, 0.2, 0.1]])
    error = np.array([[-20.0, 0.0, 0.02], [300.0, -0.5, 0.1], [10.0, 0.1, -0.1]])
    fig, axes = plt.subplots(1, 3)
    plots.error_against_bound(axes, bound, error, goal={"teff": 60.0, "logg": 0.12, "feh": 0.06})
    points = axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(points, [[50.0, 20.0], [400.0, 300.0]])  # the node without a bound is left out
    logg = axes[1].collections[0].get_offsets()
    assert logg[0, 1] == pytest.approx(0.1 / 3)  # an exact prediction sits at the floor, not at log 0
    assert axes[0].get_xscale() == "log" and "Cramér–Rao" in axes[0].get_xlabel() and "[K]" in axes[0].get_xlabel()
    assert any(line.get_label() == "goal σ" for line in axes[2].lines)


def test_error_against_bound_says_so_when_no_node_has_a_bound():
    fig, axes = plt.subplots(1, 3)
    plots.error_against_bound(axes, np.full((2, 3), np.nan), np.zeros((2, 3)))
    assert all(ax.texts[0].get_text() == "no node with a bound" for ax in axes)
