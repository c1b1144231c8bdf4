"""Temperature scaling and calibration metrics on tiny hand-computed or seeded synthetic sets."""

import math

import matplotlib

matplotlib.use("Agg")  # no display on test machines

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from remap_lib.evaluation.calibrate import (  # noqa: E402
    TemperatureScaledModel,
    apply_temperature,
    calibration_summary,
    central_interval,
    collect_logits,
    coverage,
    expected_calibration_error,
    fit_coverage_temperature,
    fit_coverage_temperatures,
    fit_temperature,
    fit_temperatures,
    interval_ece,
    plot_reliability,
    reliability,
    reliability_top_label,
    temperature_nll,
    top_label_ece,
)
from remap_lib.evaluation.evaluate import predict  # noqa: E402
from remap_lib.nn.binning import LabelBins  # noqa: E402
from remap_lib.nn.model import DeepREMAP, ModelConfig  # noqa: E402

torch.set_num_threads(2)

ABC = LabelBins("x", (0.0, 1.0, 2.0, 3.0))  # three unit bins, centres 0.5, 1.5, 2.5
LEVELS = np.arange(1, 10) / 10


def sample_classes(z, rng):
    """One class per row drawn from softmax(z) by inverting the CDF."""
    cdf = np.cumsum(apply_temperature(z, 1.0), axis=1)
    return np.minimum((cdf < rng.random((len(z), 1))).sum(axis=1), z.shape[1] - 1)


def calibrated_set(n=20000, nbins=20, scale=1.5, seed=0):
    """Logits, and truths drawn from the PMF itself (bin ~ p, then uniform within the bin)."""
    rng = np.random.default_rng(seed)
    z = scale * rng.standard_normal((n, nbins))
    k = sample_classes(z, rng)
    return z, k + rng.random(n), LabelBins.uniform("x", 0.0, float(nbins), 1.0)


# -- temperature scaling -------------------------------------------------------------------------
def test_apply_temperature_hand_values():
    # softmax(0, ln 3) = (1, 3) / 4; T = 2 halves the logits: (1, √3) / (1 + √3); huge T -> uniform.
    z = np.array([[0.0, math.log(3.0)]])
    assert np.allclose(apply_temperature(z, 1.0), [[0.25, 0.75]])
    assert np.allclose(apply_temperature(z, 2.0), [[1 / (1 + 3**0.5), 3**0.5 / (1 + 3**0.5)]])
    assert np.allclose(apply_temperature(z, 1e9), [[0.5, 0.5]])
    assert np.allclose(apply_temperature(torch.tensor(z), 1.0), [[0.25, 0.75]])  # torch input too


def test_nll_hand_value():
    # target class 1 of (0, ln 3): −log 0.75
    assert temperature_nll([[0.0, math.log(3.0)]], [1], 1.0) == pytest.approx(-math.log(0.75))


def test_fit_recovers_known_temperature():
    rng = np.random.default_rng(1)
    z0 = 2.0 * rng.standard_normal((4000, 8))
    y = sample_classes(z0, rng)  # labels drawn from softmax(z0): z0 is calibrated
    assert fit_temperature(3.0 * z0, y) == pytest.approx(3.0, rel=0.10)  # over-confident by 3
    assert fit_temperature(z0, y) == pytest.approx(1.0, rel=0.10)
    assert fit_temperature(z0 / 2.0, y) == pytest.approx(0.5, rel=0.10)  # under-confident
    one_hot = np.eye(8)[y]
    assert fit_temperature(3.0 * z0, one_hot) == pytest.approx(fit_temperature(3.0 * z0, y), rel=1e-4)


def test_zero_mass_rows_are_ignored():
    rng = np.random.default_rng(2)
    z0 = rng.standard_normal((500, 5))
    y = sample_classes(z0, rng)
    junk = 50.0 * rng.standard_normal((100, 5))  # would drag T far if used
    t_ref = fit_temperature(z0, y)
    assert fit_temperature(np.vstack([z0, junk]), np.concatenate([y, -np.ones(100, int)])) == pytest.approx(t_ref)
    soft = np.vstack([np.eye(5)[y], np.zeros((100, 5))])
    assert fit_temperature(np.vstack([z0, junk]), soft) == pytest.approx(t_ref, rel=1e-4)
    with pytest.raises(ValueError, match="no row has target mass"):
        fit_temperature(junk, np.zeros((100, 5)))
    with pytest.raises(ValueError, match="target rows"):
        fit_temperature(z0, y[:10])


def test_fit_temperatures_per_head_with_label_sigma():
    rng = np.random.default_rng(3)
    bins = {name: LabelBins.uniform(name, 0.0, 10.0, 1.0) for name in ("teff", "logg", "feh")}
    z0 = 2.0 * rng.standard_normal((2000, 10))
    k = sample_classes(z0, rng)
    labels = np.stack([k + 0.5, k + 0.5, k + 0.5], axis=1).astype(float)
    labels[:50, 2] = np.nan  # unknown [Fe/H]: those rows are skipped for that head only
    logits = {"teff": 2.0 * z0, "logg": z0, "feh": 4.0 * z0}
    temps = fit_temperatures(logits, labels, bins)
    assert temps["teff"] == pytest.approx(2.0, rel=0.1) and temps["logg"] == pytest.approx(1.0, rel=0.1)
    assert temps["feh"] == pytest.approx(fit_temperature(4.0 * z0[50:], k[50:]))
    # Gaussian label uncertainty spreads the targets, so the fitted PMFs must be broader.
    soft = fit_temperatures(logits, labels, bins, label_sigma={"teff": 1.0, "logg": 1.0, "feh": None})
    assert soft["teff"] > temps["teff"] and soft["feh"] == temps["feh"]
    assert fit_temperatures(logits, labels, bins, label_sigma=[1.0, 1.0, None]) == soft


def tiny_model():
    torch.manual_seed(0)
    cfg = ModelConfig(npix=32, stem_channels=4, stage_channels=(4,), kernel_size=3, embedding_dim=3,
                      head_bins={"teff": 4, "logg": 3, "feh": 5})
    return DeepREMAP(cfg).eval()


def test_scaled_model_divides_logits_and_keeps_state():
    model = tiny_model()
    flux = torch.rand(5, 32) + 0.5
    temps = {"teff": 2.0, "logg": 0.5, "feh": 1.0}
    scaled = TemperatureScaledModel(model, temps).eval()
    raw = collect_logits(model, flux.numpy(), batch_size=2)
    out = scaled(flux)
    for name, t in temps.items():
        assert torch.allclose(out["logits"][name].double(), torch.as_tensor(raw[name]) / t, atol=1e-6)
    assert torch.equal(out["embedding"], model(flux)["embedding"])
    assert scaled.temperatures == temps and scaled.config is model.config
    # The temperatures travel in state_dict, so a fresh wrapper loads them back.
    state = scaled.state_dict()
    assert torch.equal(state["temperature"], torch.tensor([2.0, 0.5, 1.0]))
    again = TemperatureScaledModel(tiny_model(), {"teff": 1.0, "logg": 1.0, "feh": 1.0})
    again.load_state_dict(state)
    assert again.temperatures == temps
    # predict() takes the wrapper unchanged: its PMFs are the tempered softmax.
    pred = predict(scaled, flux.numpy(), bins={n: LabelBins.uniform(n, 0.0, float(k), 1.0)
                                             for n, k in model.config.head_bins.items()}, return_pmf=True)
    assert np.allclose(pred["logg"]["pmf"], apply_temperature(raw["logg"], 0.5), atol=1e-6)


def test_scaled_model_rejects_bad_input():
    with pytest.raises(ValueError, match="no temperature"):
        TemperatureScaledModel(tiny_model(), {"teff": 1.0})
    with pytest.raises(ValueError, match="> 0"):
        TemperatureScaledModel(tiny_model(), {"teff": 1.0, "logg": 0.0, "feh": 1.0})


# -- calibration metrics -------------------------------------------------------------------------
def test_interval_coverage_one_hot():
    pmf = np.array([[0.0, 1.0, 0.0]] * 3)
    # Truth at the centre of the one-hot bin: every central interval [1.5 − q/2, 1.5 + q/2] holds it.
    r = reliability(pmf, [1.5, 1.5, 1.5], ABC)
    assert np.array_equal(r["coverage"], np.ones(9)) and r["n"] == 3
    assert coverage(pmf, [1.5, 1.5, 1.5], ABC, 0.1) == 1.0
    # A one-hot in bin 0 and truth two bins away (centre of bin 2): never covered.
    far = reliability([[1.0, 0.0, 0.0]], [2.5], ABC)
    assert np.array_equal(far["coverage"], np.zeros(9))
    assert interval_ece([[1.0, 0.0, 0.0]], [2.5], ABC) == pytest.approx(0.5)  # mean of 0.1 ... 0.9


def test_interval_hand_values_two_bins():
    # Mass ½ in each of bins 0 and 1: CDF rises linearly from 0 at x=0 to 1 at x=2, so the central
    # q-interval is [1 − q, 1 + q]; truth 1.5 is inside from q = 0.5 on.
    lo, hi = central_interval([[0.5, 0.5, 0.0]], ABC, 0.5)
    assert lo[0] == pytest.approx(0.5) and hi[0] == pytest.approx(1.5)
    cov = reliability([[0.5, 0.5, 0.0]], [1.5], ABC)["coverage"]
    assert cov.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_central_interval_matches_decode():
    rng = np.random.default_rng(4)
    pmf = rng.dirichlet(np.ones(3), size=20)
    lo, hi = central_interval(pmf, ABC, 0.68)
    dec = ABC.decode(pmf)
    assert np.allclose(lo, dec["p16"]) and np.allclose(hi, dec["p84"])


def test_top_label_hand_values():
    pmf = np.array([[0.75, 0.25, 0.0]] * 4)
    # confidence 0.75 everywhere; 3 of 4 truths in bin 0 -> accuracy 0.75 -> ECE 0
    assert top_label_ece(pmf, [0.5, 0.2, 0.9, 1.5], ABC) == pytest.approx(0.0)
    # 2 of 4 -> |0.5 − 0.75| = 0.25
    assert top_label_ece(pmf, [0.5, 0.2, 1.9, 1.5], ABC) == pytest.approx(0.25)
    r = reliability_top_label(pmf, [0.5, 0.2, 1.9, 1.5], ABC, n_bins=4)
    assert r["bin_count"].tolist() == [0, 0, 4, 0]  # 0.75 lies in (0.5, 0.75]
    assert r["bin_accuracy"][2] == 0.5 and np.isnan(r["bin_accuracy"][0])


def test_calibrated_set_has_small_ece_and_overconfident_large():
    z, truth, bins = calibrated_set()
    good = expected_calibration_error(apply_temperature(z, 1.0), truth, bins)
    assert good["top_label"] < 0.02 and good["interval"] < 0.02
    bad = expected_calibration_error(apply_temperature(z, 1 / 3), truth, bins)  # sharpened 3x
    assert bad["top_label"] > 0.1 and bad["interval"] > 0.1
    # Over-confidence: intervals too narrow, so coverage falls short of nominal at every level.
    assert np.all(reliability(apply_temperature(z, 1 / 3), truth, bins)["coverage"] < LEVELS)
    # ... and temperature scaling on the sharpened logits repairs it.
    t = fit_temperature(3.0 * z, bins.bin_index(truth))
    assert interval_ece(apply_temperature(3.0 * z, t), truth, bins) < 0.02


def test_metrics_skip_uninformative_rows():
    z, truth, bins = calibrated_set(n=2000)
    pmf = apply_temperature(z, 1.0)
    ref = expected_calibration_error(pmf, truth, bins)
    pmf2 = np.vstack([pmf, np.zeros((5, bins.nbins)), pmf[:5]])
    truth2 = np.concatenate([truth, np.full(5, 3.0), np.full(5, np.nan)])
    assert expected_calibration_error(pmf2, truth2, bins) == ref
    assert reliability(pmf2, truth2, bins)["n"] == 2000


def test_calibration_summary_by_hand():
    bins = {"teff": ABC, "logg": ABC, "feh": ABC}
    pmfs = {"teff": np.array([[0.0, 1.0, 0.0]] * 2),  # one-hot on the truth's bin: covered at every level
            "logg": np.array([[1.0, 0.0, 0.0]] * 2),  # one-hot two bins away: never covered, never right
            "feh": np.array([[0.5, 0.5, 0.0]] * 2)}  # interval [1 − q, 1 + q] holds 1.5 from q = 0.5 on
    labels = np.array([[1.5, 2.5, 1.5]] * 2)
    s = calibration_summary(pmfs, labels, bins)
    assert set(s) == {"teff", "logg", "feh"}
    assert s["teff"]["coverage_68"] == s["teff"]["coverage_95"] == 1.0
    assert s["teff"]["ece_interval"] == pytest.approx(0.5) and s["teff"]["ece_top_label"] == pytest.approx(0.0)
    assert s["logg"]["coverage_68"] == s["logg"]["coverage_95"] == 0.0
    assert s["logg"]["ece_interval"] == pytest.approx(0.5) and s["logg"]["ece_top_label"] == pytest.approx(1.0)
    assert s["feh"]["coverage_68"] == 1.0
    assert s["feh"]["ece_interval"] == pytest.approx(2.5 / 9)  # |0 − q| for q < 0.5, |1 − q| from 0.5 on
    assert s["feh"]["ece_top_label"] == pytest.approx(0.5)  # confidence ½, argmax bin 0 misses the truth
    assert s["feh"]["reliability"]["coverage"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_plot_reliability_draws_both_curves():
    fig, ax = plt.subplots()
    before = {"levels": LEVELS, "coverage": LEVELS * 0.7}
    plot_reliability(ax, before, {"levels": LEVELS, "coverage": LEVELS}, title="teff")
    assert len(ax.lines) == 3 and ax.get_title() == "teff"  # diagonal + before + after
    fig2, ax2 = plt.subplots()
    top = reliability_top_label([[0.75, 0.25, 0.0]], [0.5], ABC)
    plot_reliability(ax2, top)
    assert len(ax2.lines) == 2 and ax2.get_xlabel().startswith("confidence")
    plt.close(fig)
    plt.close(fig2)


# ---------------------------------------------------------------- coverage temperature
WIDE = LabelBins.uniform("x", 0.0, 40.0, 0.5)
GRID = np.geomspace(0.25, 16.0, 145)  # 3 % steps: enough here, and fast


def gaussian_logits(mu, width, bins=WIDE):
    """Logits whose softmax is a Gaussian of ``width`` around each ``mu`` (log-density up to a constant)."""
    return -0.5 * ((bins.centers[None, :] - np.asarray(mu)[:, None]) / width) ** 2


def overconfident_sample(n=1500, seed=0, true_width=2.0):
    rng = np.random.default_rng(seed)
    mu = rng.uniform(12, 28, n)
    return mu, mu + true_width * rng.standard_normal(n)


def test_coverage_temperature_undoes_a_known_overconfidence():
    # PMFs half as wide as the scatter of the truth: softmax(z / T) has width 1·sqrt(T), so T = 4 calibrates
    mu, truth = overconfident_sample()
    t = fit_coverage_temperature([gaussian_logits(mu, 1.0)], truth, WIDE, grid=GRID)
    assert t == pytest.approx(4.0, rel=0.12)
    pmf = apply_temperature(gaussian_logits(mu, 1.0), t)
    assert coverage(pmf, truth, WIDE, 0.68) == pytest.approx(0.68, abs=0.03)
    assert interval_ece(pmf, truth, WIDE) < interval_ece(apply_temperature(gaussian_logits(mu, 1.0), 1.0), truth, WIDE)


def test_reliability_reads_each_interval_about_a_given_centre():
    # a narrow PMF at 10 (68 % interval about 9-11): a truth of 12 is outside, unless the interval is
    # moved onto a centre of 12
    z = gaussian_logits([10.0, 10.0], 1.0)
    pmf = apply_temperature(z, 1.0)
    truth = np.array([12.0, 10.2])
    assert reliability(pmf, truth, WIDE, (0.68,))["coverage"][0] == pytest.approx(0.5)
    assert reliability(pmf, truth, WIDE, (0.68,), centre=[12.0, 10.0])["coverage"][0] == pytest.approx(1.0)
    # rows without a truth are dropped together with their centre
    kept = reliability(pmf, [np.nan, 12.0], WIDE, (0.68,), centre=[10.0, 12.0])
    assert kept["n"] == 1 and kept["coverage"][0] == pytest.approx(1.0)


def test_recentred_coverage_fit_scores_intervals_about_the_unwidened_median():
    # PMFs pressed against the top of a short grid: a higher temperature drags their median down, so
    # the plain fit pays for that move; read about the T = 1 median, the intervals need less widening
    short = LabelBins.uniform("x", 0.0, 10.0, 0.25)
    rng = np.random.default_rng(4)
    mu = rng.uniform(8.5, 9.5, 800)
    truth = mu + 0.5 * rng.standard_normal(800)
    z = [gaussian_logits(mu, 0.25, short)]
    plain = fit_coverage_temperature(z, truth, short, grid=GRID)
    moved = fit_coverage_temperature(z, truth, short, grid=GRID, recentre=True)
    assert moved != plain
    centre = short.quantiles(apply_temperature(z[0], 1.0), [0.5])[:, 0]
    assert reliability(apply_temperature(z[0], moved), truth, short, (0.68,), centre)["coverage"][0] == \
        pytest.approx(0.68, abs=0.05)


def test_calibrated_pmfs_keep_a_temperature_near_one():
    mu, truth = overconfident_sample(seed=1)
    assert fit_coverage_temperature([gaussian_logits(mu, 2.0)], truth, WIDE, grid=GRID) == pytest.approx(1.0, rel=0.12)


def test_members_share_one_temperature_fitted_on_their_mixture():
    # two members that disagree by ±1.5: their mixture is already wider, so the shared T is smaller
    mu, truth = overconfident_sample(seed=2)
    alone = fit_coverage_temperature([gaussian_logits(mu, 1.0)], truth, WIDE, grid=GRID)
    mixed = fit_coverage_temperature([gaussian_logits(mu - 1.5, 1.0), gaussian_logits(mu + 1.5, 1.0)], truth, WIDE,
                                     grid=GRID)
    assert mixed < alone
    # and identical members change nothing
    assert fit_coverage_temperature([gaussian_logits(mu, 1.0)] * 3, truth, WIDE, grid=GRID) == alone


def test_coverage_temperatures_per_head_skip_unknown_labels():
    mu, truth = overconfident_sample(seed=3)
    labels = np.column_stack([truth, truth, np.full(truth.shape, np.nan)])
    labels[::2, 0] = np.nan  # half the first label unknown: fitted on the rest
    logits = {"teff": gaussian_logits(mu, 1.0), "logg": gaussian_logits(mu, 2.0)}
    t = fit_coverage_temperatures([logits], labels, {"teff": WIDE, "logg": WIDE}, grid=GRID)
    assert set(t) == {"teff", "logg"} and t["teff"] == pytest.approx(4.0, rel=0.15)
    with pytest.raises(ValueError, match="no known label"):
        fit_coverage_temperatures([{"feh": gaussian_logits(mu, 1.0)}], labels, {"feh": WIDE}, grid=GRID)
