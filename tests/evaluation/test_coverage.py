"""remap_lib.evaluation.coverage: cutting the window, and the fit of the widening with the missing share."""

import numpy as np
import pytest

from remap_lib.data.dataset import LABEL_NAMES
from remap_lib.evaluation.coverage import cut_spectrum, ensemble_pmf, fit_widening
from remap_lib.nn.binning import LabelBins
from remap_lib.spectra.preprocess import pixel_edges, uncovered

BINS = {name: LabelBins.uniform(name, -8.0, 8.0, 0.25) for name in LABEL_NAMES}
GRID = np.geomspace(0.5, 8.0, 81)  # 3.5 % steps: coarser than the real fit, to keep the test quick


@pytest.mark.parametrize("end", ["blue", "red"])
@pytest.mark.parametrize("fraction", [0.0, 0.02, 0.1])
def test_cut_leaves_at_most_the_fraction_uncovered(end, fraction):
    wave = np.arange(4900.0, 5800.0, 0.9)
    window = (4998.95, 5700.95)
    w, f = cut_spectrum(wave, wave * 2, window, fraction, end)
    blue, red = uncovered(w, window)
    gap = blue if end == "blue" else red
    assert (red if end == "blue" else blue) == 0.0
    assert fraction * 702 - 0.9 < gap <= fraction * 702 + 1e-9
    np.testing.assert_array_equal(f, w * 2)
    assert pixel_edges(w).size == w.size + 1


def _logits(rng, n, scatter):
    """Logits of Gaussian PMFs of width 1 centred on truth + N(0, scatter): honest when scatter = 1."""
    centres = BINS["teff"].centers
    truth = rng.uniform(-2, 2, (n, 3))
    guess = truth + rng.normal(0, scatter, (n, 3))
    member = {name: -0.5 * (centres[None] - guess[:, j:j + 1]) ** 2 for j, name in enumerate(LABEL_NAMES)}
    return [member], truth


def test_widening_slope_follows_the_scatter_and_never_sharpens():
    rng = np.random.default_rng(0)
    logits, labels, missing = {}, {}, {}
    for f, scatter in ((0.0, 1.0), (0.05, 1.5), (0.1, 2.0)):
        logits[f], labels[f] = _logits(rng, 600, scatter)
        missing[f] = np.full(600, f)
    fit = fit_widening(logits, missing, labels, BINS, GRID)
    for name in LABEL_NAMES:
        k = fit[name]["factors"]
        # a Gaussian PMF of width σ needs temperature σ² to cover a scatter σ: 2.25 and 4 relative to 1
        assert k["0.05"] / k["0.0"] == pytest.approx(1.5**2, rel=0.25)
        assert k["0.1"] / k["0.0"] == pytest.approx(2.0**2, rel=0.25)  # less: range edges clip the PMFs
        assert fit[name]["slope"] > 10
    same = fit_widening({0.0: logits[0.0], 0.1: logits[0.0]}, {0.0: missing[0.0], 0.1: missing[0.1]},
                        {0.0: labels[0.0], 0.1: labels[0.0]}, BINS, GRID)
    assert all(v["slope"] == 0.0 for v in same.values())
    sharper = fit_widening({0.0: logits[0.1], 0.1: logits[0.0]}, {0.0: missing[0.0], 0.1: missing[0.1]},
                           {0.0: labels[0.1], 0.1: labels[0.0]}, BINS, GRID)
    assert all(v["slope"] == 0.0 for v in sharper.values())


def test_ensemble_pmf_per_row_factor():
    rng = np.random.default_rng(1)
    logits, _ = _logits(rng, 3, 1.0)
    two = ensemble_pmf(logits, "teff", np.array([1.0, 2.0, 1.0]))
    np.testing.assert_allclose(two[[0, 2]], ensemble_pmf(logits, "teff")[[0, 2]])
    np.testing.assert_allclose(two[1], ensemble_pmf(logits, "teff", 2.0)[1])


def test_measure_reports_every_cut_and_fits_on_validation_only(tmp_path):
    """The whole measurement on the toy ensemble: stars that reach beyond the tiny window, cut at each end."""
    from toymodel import toy_ensemble

    from remap_lib.evaluation.coverage import measure

    model = toy_ensemble(tmp_path)
    wave = np.arange(4980.0, 5140.0, 0.3)
    asked = []

    def stars(role):
        asked.append(role)
        rng = np.random.default_rng(len(asked))
        labels = np.column_stack([rng.uniform(4000, 7000, 12), rng.uniform(1, 5, 12), rng.uniform(-2, 0.5, 12)])
        depth = 0.2 + 0.5 * (labels[:, :1] - 4000) / 3000
        flux = 1 - depth * np.exp(-0.5 * ((wave - 5050) / 1.5) ** 2)
        return labels, [(wave, f) for f in flux]

    with pytest.raises(RuntimeError, match="a cut leaves more than MAX_MISSING = 0.1 of the window"):
        measure(model, fractions=(0.0, 0.1), progress=False, stars=stars)  # 0.3 Å pixels: 13 of 128 masked
    asked.clear()
    report = measure(model, fractions=(0.0, 0.05, 0.09), progress=False, stars=stars)
    assert asked == ["validation", "calibration"] and report["fit_on"] == "validation"
    for role in ("validation", "calibration"):
        cuts = report["roles"][role]["cuts"]
        assert [(c["fraction"], c["end"]) for c in cuts] == [(0.0, "blue"), (0.05, "blue"), (0.05, "red"),
                                                              (0.09, "blue"), (0.09, "red")]
        for c in cuts:  # the cut, to within an output pixel (1/128 of the window)
            assert abs(c["missing"] - c["fraction"]) <= 1 / 128 + 1e-9
            for name in LABEL_NAMES:
                assert c[name]["width68_widened"] >= c[name]["width68"] > 0
        assert all(cuts[0][n]["median_shift"] == 0 for n in LABEL_NAMES)
    assert all(v["slope"] >= 0 for v in report["widening"].values())
