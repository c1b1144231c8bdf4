"""remap_lib.prediction.ood: the flux model, χ², the ROC, the saved detector and its use by predict."""

import numpy as np
import pytest

from remap_lib.prediction.ood import Detector, chi2, design, detector_path, fit_flux_model, robust_scale, roc


def test_design_is_the_quadratic_in_scaled_labels():
    row = design([[6000.0, 4.8, 0.2]])[0]  # scaled: (1, 1, 1) from centre (5500, 4.3, -0.3), scale (500, .5, .5)
    np.testing.assert_allclose(row, np.ones(10))
    np.testing.assert_allclose(design([[5500.0, 4.3, -0.3]])[0], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0])


def test_flux_model_recovers_a_quadratic_and_its_scatter():
    rng = np.random.default_rng(0)
    labels = np.column_stack([rng.uniform(4500, 6500, 200), rng.uniform(3.8, 4.8, 200), rng.uniform(-1, 0.4, 200)])
    coef = rng.normal(0, 0.05, (10, 6))
    flux = design(labels) @ coef + rng.normal(0, 0.004, (200, 6))
    mask = np.zeros_like(flux, dtype=bool)
    mask[:5, 0] = True  # masked pixels are left out of the fit
    flux[:5, 0] = 50.0
    fitted, scatter2 = fit_flux_model(flux, mask, labels, np.full(200, 500.0))
    np.testing.assert_allclose(fitted, coef, atol=0.003)
    # residual variance 0.004² less the stated noise (1/500)²
    np.testing.assert_allclose(np.sqrt(scatter2), np.sqrt(0.004**2 - 0.002**2), rtol=0.2)


def test_chi2_by_hand():
    coef = np.zeros((10, 3))
    coef[0] = 1.0  # the model is a flat line at 1
    flux = np.array([[1.1, 0.9, 1.0], [1.2, 1.0, 5.0]])
    mask = np.array([[False, False, False], [False, False, True]])
    out = chi2(flux, mask, np.array([10.0, 10.0]), np.zeros((2, 3)), coef, np.full(3, 0.0))
    # σ² = 0.01: (0.01 + 0.01 + 0) / 0.01 / 3 pixels, and (0.04 + 0) / 0.01 / 2 usable pixels
    np.testing.assert_allclose(out, [2 / 3, 2.0])


def test_roc_by_hand():
    curve = roc([0.0, 1.0, 2.0], [1.5, 3.0])
    # thresholds 3, 2, 1.5, 1, 0: in-domain ≥ t: 0, 1/3, 1/3, 2/3, 1; outliers: 1/2, 1/2, 1, 1, 1
    assert curve["fpr"] == pytest.approx([0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert curve["tpr"] == pytest.approx([0, 0.5, 0.5, 1, 1, 1])
    assert curve["auc"] == pytest.approx(5 / 6)  # pairs won: 1.5 beats 0 and 1, 3 beats all three
    assert roc([0, 1], [0, 1])["auc"] == pytest.approx(0.5)


def test_robust_scale_is_median_and_mad():
    center, spread = robust_scale(np.array([[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]]))
    np.testing.assert_allclose(center, [2.0, 5.0])
    np.testing.assert_allclose(spread, [1.482602, 1e-3])  # a constant column cannot divide by zero


def test_score_and_flag():
    det = Detector(np.zeros((10, 2)), np.ones(2), np.array([0.0, 1.0]), np.array([1.0, 2.0]), 3.0)
    scores = det.score(np.array([[2.0, 9.0], [4.0, 1.0], [1.0, np.nan]]))
    np.testing.assert_allclose(scores, [4.0, 4.0, 1.0])  # max of (2, 4), of (4, 0); χ² alone without a distance
    assert list(det.flag(scores, [50.0, 50.0, 2.0])) == [True, True, True]  # the last by its S/N below 3
    assert list(det.flag([1.0, 1.0], [50.0, 3.0])) == [False, False]


def test_teff_range_rule_by_hand(tmp_path):
    """Four bins centred at 3900, 4500, 6500 and 7100 K; the range is 4000–7000 K: the first and last are outside."""
    centers = np.array([3900.0, 4500.0, 6500.0, 7100.0])
    pmf = np.array([[0.6, 0.4, 0.0, 0.0], [0.2, 0.3, 0.2, 0.3], [0.0, 0.0, 0.4, 0.6], [0.0, 0.5, 0.5, 0.0]])
    det = Detector(np.zeros((10, 2)), np.ones(2), np.zeros(2), np.ones(2), 3.0, teff_range=(4000.0, 7000.0))
    outside = det.mass_outside(pmf, centers)
    np.testing.assert_allclose(outside, [0.6, 0.5, 0.6, 0.0])
    # "more likely outside than inside": 0.5 exactly is not flagged; out_of_domain is another flag
    assert list(det.outside_range(outside)) == [True, False, True, False]
    assert list(det.flag([0.0] * 4, [50.0] * 4)) == [False] * 4
    back = Detector.load(det.save(tmp_path / "r.ood.npz"))
    assert back.teff_range == (4000.0, 7000.0) and back.outside_mass == 0.5
    # a detector saved without a range (an older file) has no range rule
    old = Detector.load(Detector(np.zeros((10, 2)), np.ones(2), np.zeros(2), np.ones(2), 3.0).save(tmp_path / "o.npz"))
    assert old.teff_range is None
    np.testing.assert_allclose(old.mass_outside(pmf, centers), np.zeros(4))


def test_detector_round_trip(tmp_path):
    det = Detector(np.arange(20.0).reshape(10, 2), np.array([0.1, 0.2]), np.array([0.5, -1.0]),
                   np.array([1.5, 0.5]), 2.75, 3.0, "abc")
    path = det.save(detector_path(tmp_path / "model.pt"))
    assert path.name == "model.ood.npz"
    back = Detector.load(path)
    np.testing.assert_allclose(back.coef, det.coef)
    assert (back.threshold, back.snr_floor, back.model_sha256) == (2.75, 3.0, "abc")


def test_inputs_called_giant_are_held_against_the_giants_flux_model(tmp_path):
    """Two pixels; the dwarfs' model predicts flux 1, the giants' 0.5: each input is held against its class's."""
    dwarf_coef, giant_coef = np.zeros((10, 2)), np.zeros((10, 2))
    dwarf_coef[0], giant_coef[0] = 1.0, 0.5
    det = Detector(dwarf_coef, np.full(2, 0.01), np.zeros(2), np.ones(2), 3.0,
                   coef_giant=giant_coef, scatter2_giant=np.full(2, 0.01))
    flux, mask, snr = np.array([[1.0, 1.0], [0.5, 0.5]]), np.zeros((2, 2), bool), np.array([1e6, 1e6])
    as_dwarfs = det.chi2(flux, mask, snr, [[5000.0, 4.5, 0.0], [5000.0, 4.5, 0.0]])
    np.testing.assert_allclose(as_dwarfs, [0.0, 0.25 / 0.01], rtol=1e-6)  # the second is no dwarf
    as_called = det.chi2(flux, mask, snr, [[5000.0, 4.5, 0.0], [4800.0, 2.5, 0.0]])
    np.testing.assert_allclose(as_called, [0.0, 0.0], atol=1e-9)  # ... but a giant like the giants
    back = Detector.load(det.save(tmp_path / "d.ood.npz"))
    np.testing.assert_allclose(back.coef_giant, giant_coef)
    no_giants = Detector.load(Detector(dwarf_coef, np.full(2, 0.01), np.zeros(2), np.ones(2), 3.0).save(
        tmp_path / "e.ood.npz"))
    assert no_giants.coef_giant is None
    np.testing.assert_allclose(no_giants.chi2(flux, mask, snr, [[5000.0, 4.5, 0.0], [4800.0, 2.5, 0.0]]),
                               as_dwarfs, rtol=1e-6)


def _toy_classes():
    """Toy stars on the toy instrument: one absorption line whose depth grows with Teff, a little noise."""
    wave = np.arange(4980.0, 5140.0, 0.9)
    rng = np.random.default_rng(3)

    def stars(n, lo=4500, hi=6500, depth=None):
        labels = np.column_stack([rng.uniform(lo, hi, n), rng.uniform(4, 4.6, n), rng.uniform(-0.5, 0.3, n)])
        d = 0.2 + 0.4 * (labels[:, :1] - 4000) / 3000 if depth is None else np.full((n, 1), depth)
        flux = 1 - d * np.exp(-0.5 * ((wave - 5050) / 1.5) ** 2) + rng.normal(0, 0.005, (n, wave.size))
        return labels, [(wave, f) for f in flux]

    return {"finetune": stars(40), "validation": stars(12), "calibration": stars(10),
            "line in emission": stars(8, depth=-0.6)}


def test_measure_on_toy_stars_saves_a_detector_predict_uses(tmp_path):
    from toymodel import toy_ensemble

    from remap_lib import Predictor
    from remap_lib.prediction.ood import measure

    model = toy_ensemble(tmp_path)
    classes = _toy_classes()
    labels, masked = _toy_classes()["calibration"]
    cut = [0.3, 0.3, 0.3, 0.05]  # the share of pixels set to NaN: predict refuses more than MAX_MISSING (10 %)
    classes["masked"] = (labels[:4], [(w, np.where(np.arange(w.size) < c * w.size, np.nan, f))
                                      for (w, f), c in zip(masked[:4], cut, strict=True)])
    report = measure(model, classes=classes, progress=False)
    assert report["fitted_on"] == ["finetune", "validation"] and report["detector_file"] == "ensemble.ood.npz"
    assert report["classes"]["masked"]["refused"] == 3 and report["classes"]["masked"]["n"] == 1
    emission = report["classes"]["line in emission"]
    assert emission["flagged"] == 1.0 and emission["auc"] == 1.0  # nothing in training looks like that
    assert report["classes"]["calibration"]["flagged"] <= 0.2
    assert "roc" not in report["classes"]["calibration"]
    predictor = Predictor(model)
    assert predictor.detector is not None and predictor.detector.threshold == report["threshold"]
    table = predictor.predict(classes["line in emission"][1] + classes["calibration"][1][:2])
    assert list(table["out_of_domain"][:8]) == [True] * 8
    assert np.all(np.isfinite(table["ood_score"])) and table.meta["ood_score_threshold"] == report["threshold"]
    assert all("out_of_domain" in f for f in table["flags"][:8])
    # a detector fitted for another model file is not used
    det = Detector.load(detector_path(model))
    det.model_sha256 = "0" * 64
    det.save(detector_path(model))
    assert Predictor(model).detector is None


def test_predict_flags_a_teff_pmf_outside_the_range(tmp_path):
    """The toy network's Teff PMFs lie inside its bins: a range that holds them all flags nothing, a range
    that holds none of them flags every row ``teff_outside_range`` (and says why), not ``out_of_domain``."""
    from toymodel import toy_ensemble

    from remap_lib import Predictor
    from remap_lib.prediction.ood import measure

    model = toy_ensemble(tmp_path)
    classes = _toy_classes()
    report = measure(model, classes=classes, progress=False)
    assert report["teff_range"] == [4000.0, 7000.0] and "teff_outside_range" in report["rule"]
    spectra = classes["calibration"][1][:3]
    det = Detector.load(detector_path(model))
    for teff_range, expected in (((0.0, 1e5), False), ((1e5, 2e5), True)):
        det.teff_range = teff_range
        det.save(detector_path(model))
        table = Predictor(model).predict(spectra)
        assert [("teff_outside_range" in f) for f in table["flags"]] == [expected] * 3
        assert all(("of the Teff PMF lies outside" in n) == expected for n in table["notes"])
        assert not any(table["out_of_domain"])


def test_measure_reads_the_medians_predict_reports_whatever_the_widening(tmp_path):
    """The detector's χ² is taken at the labels predict gives; a noise widening (which spreads the
    intervals, never the medians) must not make the two disagree for a noisy spectrum."""
    from toymodel import toy_ensemble

    from remap_lib import Predictor
    from remap_lib.fileio import sha256_file
    from remap_lib.prediction.ood import _network_features
    from remap_lib.prediction.widening import Widening, widening_path

    model = toy_ensemble(tmp_path)
    Widening(noise={n: [[50.0, 1.0], [5.0, 4.0]] for n in ("teff", "logg", "feh")},
             model_sha256=sha256_file(model)).save(widening_path(model))
    predictor = Predictor(model)
    wave, flux = _toy_classes()["calibration"][1][0]
    noisy = (wave, flux + np.random.default_rng(1).normal(0, 0.1, wave.size))  # S/N ~ 10: widened
    prep = predictor.prepare([noisy], rv=0.0)
    medians, _, snr, _, _ = _network_features(predictor, prep)
    assert predictor.widening.noise_factors(snr)["teff"][0] > 1.5
    table = predictor.predict_prepared(prep)
    np.testing.assert_allclose(medians[0], [table[f"{n}_median"][0] for n in ("teff", "logg", "feh")], rtol=1e-5)


def test_measure_fits_unlabelled_stars_with_the_networks_labels_never_theirs(tmp_path, monkeypatch):
    """The giants class joins the fit without labels (NaN here: reading them would break the fit); the toy
    network calls every toy star giant, so all 40 make the giants' model, and none when the boundary is 0."""
    from toymodel import toy_ensemble

    from remap_lib.prediction import ood

    model = toy_ensemble(tmp_path)
    classes = _toy_classes()
    classes[ood.GIANTS] = (np.full((40, 3), np.nan), _toy_classes()["finetune"][1])
    report = ood.measure(model, classes=classes, progress=False)
    assert report["fitted_on"] == ["finetune", "validation", ood.GIANTS] and report["unlabelled"] == [ood.GIANTS]
    assert "pseudo-labels" in report["rule"] and report["classes"][ood.GIANTS]["flagged"] <= 0.2
    assert report["classes"]["line in emission"]["flagged"] == 1.0
    assert Detector.load(detector_path(model)).coef_giant is not None
    monkeypatch.setattr(ood, "GIANT_LOGG", 0.0)  # now the network calls none of them giant
    report = ood.measure(model, classes=classes, progress=False)
    assert Detector.load(detector_path(model)).coef_giant is None
    assert report["classes"]["line in emission"]["flagged"] == 1.0


def test_predict_estimates_the_rv_with_a_detector(tmp_path):
    """With a detector, a spectrum at 300 km/s is found there and shifted back; rv=0 skips the estimate;
    one within the tolerance is reported, not applied; pure noise gets no estimate and a flag."""
    from toymodel import toy_ensemble

    from remap_lib import Predictor
    from remap_lib.prediction.ood import measure
    from remap_lib.prediction.preparation import RV_TOLERANCE
    from remap_lib.spectra.instruments import C_KMS

    model = toy_ensemble(tmp_path)
    classes = _toy_classes()
    measure(model, classes=classes, progress=False)
    predictor = Predictor(model)
    wave, flux = classes["calibration"][1][0]
    moved = (wave * (1 + 300 / C_KMS), flux)
    noise = (wave, 1 + np.random.default_rng(0).normal(0, 1, wave.size))
    table = predictor.predict([moved, (wave * (1 + 10 / C_KMS), flux), noise, (wave, flux), (wave, flux[:-3]),
                               (wave[::-1], flux)])
    # malformed spectra fail their own rows, with the preprocessing's reason, and no RV estimate
    assert "shape" in table["error"][4] and table["error"][5] and not any(table["error"][:4])
    assert table["rv"][0] == pytest.approx(300, abs=10) and "estimated by cross-correlation" in table["notes"][0]
    assert abs(table["rv"][1] - 10) < RV_TOLERANCE and "cross-correlation" not in table["notes"][1]
    assert np.isnan(table["rv"][2]) and "rv_unknown" in table["flags"][2]
    for name in ("teff", "logg", "feh"):  # shifted back: as the spectrum at rest
        assert table[f"{name}_median"][0] == pytest.approx(table[f"{name}_median"][3], rel=0.02)
    given = predictor.predict(moved, rv=0.0)
    assert given["rv"][0] == 0.0 and "rv_unknown" not in given["flags"][0]


def test_finely_sampled_input_without_resolution_is_flagged(tmp_path):
    from toymodel import toy_ensemble

    from remap_lib import Predictor

    predictor = Predictor(toy_ensemble(tmp_path))
    wave = np.arange(4990.0, 5125.0, 0.1)  # 25 pixels per 2.5 Å FWHM
    flux = 1 - 0.5 * np.exp(-0.5 * ((wave - 5050) / 0.3) ** 2)
    table = predictor.predict([(wave, flux), (wave[::9], flux[::9])])
    assert "resolution_assumed" in table["flags"][0] and "pass its resolution" in table["notes"][0]
    assert "resolution_assumed" not in table["flags"][1]  # 2.8 pixels per FWHM, as the instrument's own
    declared = predictor.predict([(wave, flux), (wave, flux)], resolution=20000)
    assert "resolution_assumed" not in declared["flags"][0]
    # taken to have an LSF 2.5 pixels wide: the same as declaring FWHM 0.25 Å
    same = predictor.predict((wave, flux), fwhm=0.25)
    for name in ("teff", "logg", "feh"):
        assert table[f"{name}_median"][0] == pytest.approx(same[f"{name}_median"][0], rel=1e-6)
    assert "assumed an LSF 2.5 pixels wide (0.25 Å FWHM)" in table["notes"][0]


def test_measure_fits_the_outside_box_classifier_and_predict_flags_with_it(tmp_path):
    """With enough stars of the outside-the-box classes, the detector gets the classifier: the report has
    its nested cross-validated rates, the saved detector holds it, and predict flags ``outside_fgk_box``
    (and ``out_of_domain``, with a note) where it fires, and nothing where it cannot."""
    from toymodel import toy_ensemble

    from remap_lib import Predictor
    from remap_lib.prediction import ood

    model = toy_ensemble(tmp_path)
    classes = _toy_classes()
    classes.update(_toy_classes_outside())
    report = ood.measure(model, classes=classes, progress=False)
    box = report["box"]
    assert box["n_outside"] == 60 and box["outside"] == ["A/B (Teff > 10000 K)", "M (Teff < 3700 K)"]
    assert box["rate_counted_on"] == ["validation", "calibration"] and len(box["nested_c"]) == 5
    assert [r["seed"] for r in box["replicates"]] == [0, 1, 2, 3, 4]
    assert box["replicates"][0]["outside_box"] == report["outside_box"]["flagged"]
    assert box["replicates"][0]["in_domain"] == pytest.approx(report["in_domain"]["flagged"])
    assert "outside-the-box classifier" in report["rule"]
    # the classifier adds to what the novelty score catches (out of fold, the toy network's features)
    outside = [report["classes"][n] for n in box["outside"]]
    novelty_alone = np.mean([e["flagged_by_score"] for e in outside])
    assert report["outside_box"]["flagged"] >= 0.75 > novelty_alone + 0.2
    assert report["classes"]["calibration"]["flagged"] <= 0.2
    det = Detector.load(detector_path(model))
    assert det.box is not None and det.box.threshold == box["threshold"]
    spectra = classes["calibration"][1][:3]
    for threshold, expected in ((-np.inf, True), (np.inf, False)):
        det.box.threshold = threshold
        det.save(detector_path(model))
        table = Predictor(model).predict(spectra)
        assert [("outside_fgk_box" in f) for f in table["flags"]] == [expected] * 3
        assert all(("outside the FGK box" in n) == expected for n in table["notes"])
        if expected:
            assert all(table["out_of_domain"])


def test_measure_without_enough_outside_stars_has_no_classifier(tmp_path):
    from toymodel import toy_ensemble

    from remap_lib.prediction import ood

    model = toy_ensemble(tmp_path)
    classes = _toy_classes()
    few = _toy_classes_outside()
    classes["M (Teff < 3700 K)"] = few["M (Teff < 3700 K)"]  # 30 stars, fewer than MIN_OUTSIDE
    report = ood.measure(model, classes=classes, progress=False)
    assert report["box"] is None and Detector.load(detector_path(model)).box is None
    assert "classifier" not in report["rule"] and report["classes"]["M (Teff < 3700 K)"]["flagged_by_box"] == 0.0


def _toy_classes_outside():
    """Toy stars outside the toy box: no line at all (hot), or a line deeper than any training star's (cool)."""
    wave = np.arange(4980.0, 5140.0, 0.9)
    rng = np.random.default_rng(4)

    def stars(n, depth):
        flux = 1 - depth * np.exp(-0.5 * ((wave - 5050) / 1.5) ** 2) + rng.normal(0, 0.005, (n, wave.size))
        return np.full((n, 3), np.nan), [(wave, f) for f in flux]

    return {"A/B (Teff > 10000 K)": stars(30, 0.0), "M (Teff < 3700 K)": stars(30, 0.95)}
