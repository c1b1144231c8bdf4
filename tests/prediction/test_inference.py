"""remap_lib.predict / Predictor: outputs, the ensemble arithmetic, and the bad-input catalogue."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table
from toydata import INSTRUMENT, toy_set
from toymodel import TEMPERATURES, toy_ensemble, toy_members

from remap_lib import Predictor, predict
from remap_lib.data.dataset import LABEL_NAMES
from remap_lib.fileio import RemapDataError, sha256_file
from remap_lib.nn.modelfile import load_model
from remap_lib.prediction.widening import Widening, widening_path

#: The toy model's widening file, shaped like the shipped model's (no Teff slope, as fitted there).
TOY_WIDENING = {"missing": {"teff": 0.0, "logg": 2.0, "feh": 0.6},
                "noise": {name: [[50.0, 1.0], [10.0, 3.0], [5.0, 4.0]] for name in LABEL_NAMES}}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = toy_ensemble(tmp_path_factory.mktemp("model"))
    Widening(**TOY_WIDENING, model_sha256=sha256_file(path)).save(widening_path(path))
    return path


@pytest.fixture(scope="module")
def predictor(model_file):
    return Predictor(model_file)


@pytest.fixture(scope="module")
def toy():
    return toy_set(6)


def test_table_columns_units_and_order(predictor, toy):
    table = predictor.predict((toy.wave, toy.flux), pmf=True)
    assert len(table) == 6
    for name, unit in zip(LABEL_NAMES, ("K", "dex", "dex"), strict=True):
        for key in ("median", "p16", "p84", "p2_5", "p97_5", "mean", "std"):
            assert str(table[f"{name}_{key}"].unit) == unit
        assert np.all(table[f"{name}_p2_5"] <= table[f"{name}_p16"])
        assert np.all(table[f"{name}_p16"] <= table[f"{name}_median"])
        assert np.all(table[f"{name}_median"] <= table[f"{name}_p84"])
        assert np.all(table[f"{name}_p84"] <= table[f"{name}_p97_5"])
        np.testing.assert_allclose(table[f"{name}_pmf"].sum(axis=1), 1.0, rtol=1e-5)
    assert list(table["error"]) == [""] * 6
    assert table.meta["members"] == 2 and len(table.meta["model_sha256"]) == 64
    assert len(table.meta["bin_centers"]["teff"]) == table["teff_pmf"].shape[1]


def test_ensemble_pmf_is_mean_of_temperature_scaled_members(tmp_path, toy):
    """The PMF equals the hand-computed average of softmax(z / T_k) over the unfused members."""
    members = toy_members(tmp_path)
    from remap_lib.nn.modelfile import save_ensemble

    path = save_ensemble(tmp_path / "e.pt", members)
    table = Predictor(path).predict((toy.wave, toy.flux), pmf=True)
    prep = Predictor(path).prepare((toy.wave, toy.flux))
    expected = 0
    for member, temps in zip(members, TEMPERATURES, strict=True):
        model, _ = load_model(member)
        with torch.no_grad():
            z = model(torch.as_tensor(prep.flux), torch.as_tensor(prep.mask))["logits"]["teff"]
        expected = expected + torch.softmax(z / temps["teff"], dim=-1).numpy()
    np.testing.assert_allclose(table["teff_pmf"], expected / 2, atol=1e-5)


def test_members_option_uses_the_first_networks(model_file, toy):
    one = Predictor(model_file, members=1)
    assert len(one.networks) == 1
    with pytest.raises(ValueError, match=r"members must be 1 to 2 \(ensemble.pt has 2 networks\), got 0"):
        Predictor(model_file, members=0)
    with pytest.raises(ValueError, match="members must be 1 to 2 .*, got 5"):
        Predictor(model_file, members=5)


def test_same_input_same_numbers(predictor, toy):
    a = predictor.predict((toy.wave, toy.flux))
    b = predictor.predict((toy.wave, toy.flux))
    np.testing.assert_array_equal(np.asarray(a["teff_median"]), np.asarray(b["teff_median"]))


def test_out_of_domain_flag_follows_the_threshold(model_file, toy):
    p = Predictor(model_file)
    table = p.predict((toy.wave, toy.flux))
    d = np.asarray(table["ood_distance"])
    assert np.all((d >= 0) & (d <= 2))
    p.ood_threshold = float(np.median(d))
    table = p.predict((toy.wave, toy.flux))
    assert list(table["out_of_domain"]) == list(d > np.median(d))
    assert all(("out_of_domain" in f) == o for f, o in zip(table["flags"], table["out_of_domain"], strict=True))


def test_predict_function_accepts_table_and_quantity(model_file, toy):
    import astropy.units as u

    by_arrays = predict((toy.wave, toy.flux[0]), model=model_file)
    by_quantity = predict((toy.wave / 10 * u.nm, toy.flux[0] * u.erg), model=model_file)
    by_table = predict(Table({"wave": toy.wave, "flux": toy.flux[0]}), model=model_file)
    for other in (by_quantity, by_table):
        np.testing.assert_allclose(other["teff_median"], by_arrays["teff_median"], rtol=1e-6)
    assert "converted from nm" in by_quantity["notes"][0]


def test_declared_vacuum_is_converted_and_said(predictor, toy, tmp_path):
    """A file that declares vacuum wavelengths is converted to the model's air wavelengths."""
    from remap_lib.spectra.preprocess import air_to_vacuum

    path = tmp_path / "vac.fits"
    wave_vac = air_to_vacuum(np.linspace(4990.0, 5125.0, 400))
    flux = np.interp(wave_vac, air_to_vacuum(toy.wave), toy.flux[0])
    fits.BinTableHDU(Table({"wave": wave_vac, "flux": flux}), header=fits.Header({"AIRORVAC": "vac"})) \
        .writeto(path)
    table = predictor.predict(str(path))
    assert table["error"][0] == ""
    assert "converted from vacuum to air" in table["notes"][0]
    undeclared = predictor.predict((toy.wave, toy.flux[0]))
    assert "medium not declared: assumed air" in undeclared["notes"][0]


def _truncated_fits(tmp_path):
    path = tmp_path / "cut.fits"
    fits.PrimaryHDU(np.ones(2000), header=fits.Header({"CRVAL1": 4990.0, "CDELT1": 0.1})).writeto(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _truncated_store(tmp_path):
    from remap_lib.data.dataset import write_dataset

    path = tmp_path / "cut.h5"
    write_dataset(path, toy_set(4))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _no_columns(tmp_path):
    path = tmp_path / "cols.fits"
    fits.BinTableHDU(Table({"lam": np.arange(10.0), "counts": np.ones(10)})).writeto(path)
    return str(path)


def _empty(tmp_path):
    path = tmp_path / "empty.ecsv"
    path.write_bytes(b"")
    return str(path)


def _text(name, content):
    def make(tmp_path):
        path = tmp_path / name
        path.write_text(content)
        return str(path)

    return make


def _unknown_type(tmp_path):
    path = tmp_path / "spectrum.xyz"
    path.write_text("5000 1\n")
    return str(path)


W = INSTRUMENT.wavelength_grid()
F = 1.0 - 0.5 * np.exp(-0.5 * ((W - 5050.0) / 1.5) ** 2)


def _with(values, index, value):
    out = np.array(values, dtype=float)
    out[index] = value
    return out


# The bad-input catalogue: each case, and the words the user reads in the row's `error` column.
BAD_INPUTS = {
    "all-NaN flux": (lambda tmp: (W, np.full_like(F, np.nan)), "flux is all NaN/inf"),
    "all-inf flux": (lambda tmp: (W, np.full_like(F, np.inf)), "flux is all NaN/inf"),
    "all-zero flux": (lambda tmp: (W, np.zeros_like(F)), "flux is zero everywhere"),
    "negative flux": (lambda tmp: (W, -F), "remap needs positive flux"),
    "negative ivar": (lambda tmp: (W, F, _with(np.ones_like(F), 7, -1.0)), "negative inverse variance in 1 pixel"),
    "non-monotonic wavelengths": (lambda tmp: (W[::-1], F), "not monotonically increasing"),
    "duplicated wavelengths": (lambda tmp: (_with(W, 5, W[4]), F), "duplicated wavelengths"),
    "wavelengths in nm": (lambda tmp: (W / 10, F), "looks like nm"),
    "window not covered": (lambda tmp: (W[:60], F[:60]), "not covered"),
    "wrong shapes": (lambda tmp: (W, F[:-3]), "shape mismatch"),
    "empty file": (_empty, "file is empty"),
    "truncated FITS": (_truncated_fits, "truncated or corrupt"),
    "truncated HDF5": (_truncated_store, "truncated or corrupt"),
    "FITS without the expected columns": (_no_columns, "no flux column"),
    "text with 4 unnamed columns": (_text("wide.txt", "5000 1 0.1 7\n5001 1 0.1 7\n"), "no header and 4 columns"),
    "text that is prose": (_text("notes.txt", "Dear user,\nthese are my spectra.\n"),
                           "line 2: 'these' is not a number; is this a text spectrum?"),
    "text with ragged rows": (_text("ragged.dat", "5000 1\n5001 1\n5002 1 0.3\n"),
                              "line 3 has 3 columns, line 1 has 2"),
    "headerless CSV with 5 columns": (_text("wide.csv", "5000,1,2,3,4\n5001,1,2,3,4\n"), "no header and 5 columns"),
    "file of unknown type, named": (_unknown_type, "unsupported file type; remap reads .fits"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_its_row_only(case, predictor, tmp_path):
    """Each bad input fails its own row with a clear reason; the good spectra around it are predicted."""
    make, words = BAD_INPUTS[case]
    table = predictor.predict([(W, F), make(tmp_path), (W, F)])
    assert len(table) == 3
    assert words in table["error"][1], table["error"][1]
    assert np.isnan(table["teff_median"][1])
    assert list(table["error"][[0, 2]]) == ["", ""]
    assert np.all(np.isfinite(table["teff_median"][[0, 2]]))


def test_lists_predict_as_arrays_do(predictor, tmp_path):
    """(wave, flux) as plain lists, and the same spectrum as a headerless two-column text file."""
    by_arrays = predictor.predict((W, F))
    path = tmp_path / "star.asc"
    np.savetxt(path, np.column_stack([W, F]))
    for other in (predictor.predict((W.tolist(), F.tolist())), predictor.predict([list(W), list(F)]),
                  predictor.predict(str(path))):
        assert list(other["error"]) == [""]
        np.testing.assert_allclose(other["teff_median"], by_arrays["teff_median"], rtol=1e-5)


def test_partly_bad_pixels_are_masked_not_fatal(predictor):
    flux = F.copy()
    flux[:10] = np.nan
    row = predictor.predict((W, flux))[0]
    assert row["error"] == "" and np.isfinite(row["teff_median"])
    assert row["masked_fraction"] == pytest.approx(10 / W.size, abs=0.01)
    assert "partial_coverage" in row["flags"]
    assert f"{100 * 10 / W.size:.2g} % of the window has no usable data: PMF temperatures ×" in row["notes"]


def test_missing_pixels_widen_the_pmfs(predictor):
    """The reported PMFs are the network's with temperatures × the model's missing-data factors."""
    slopes = TOY_WIDENING["missing"]

    def missing_inflation(fraction):
        return predictor.widening.missing_factors(fraction)

    flux = F.copy()
    flux[-8:] = np.nan
    prep = predictor.prepare((W, flux))
    fraction = prep.mask.mean()
    plain, _ = predictor.network(prep.flux, prep.mask)
    table = predictor.predict_prepared(prep, pmf=True)
    for name in LABEL_NAMES:
        assert missing_inflation(fraction)[name] == pytest.approx(1 + slopes[name] * fraction)
        plain_std = predictor.bins[name].decode(plain[name])["std"][0]
        if slopes[name] > 0:
            assert table[f"{name}_std"][0] > plain_std
        else:
            assert table[f"{name}_std"][0] == pytest.approx(plain_std, rel=1e-5)
        wide, _ = predictor.network(prep.flux, prep.mask, missing_inflation([fraction]))
        np.testing.assert_allclose(table[f"{name}_pmf"][0], wide[name][0], rtol=1e-5)


def test_exact_grid_fits_image_and_table_agree(predictor, tmp_path):
    """The same pixels from a FITS image's WCS and from a FITS table: the same row, no flag."""
    image, tab = tmp_path / "image.fits", tmp_path / "table.fits"
    header = fits.Header({"CRVAL1": W[0], "CDELT1": 0.9, "CRPIX1": 1.0, "CTYPE1": "AWAV"})
    fits.PrimaryHDU(F.astype(np.float32), header=header).writeto(image)
    fits.BinTableHDU(Table({"wave": W, "flux": F.astype(np.float32)}), header=fits.Header({"AIRORVAC": "air"})) \
        .writeto(tab)
    table = predictor.predict([str(image), str(tab)])
    assert list(table["error"]) == ["", ""]
    assert list(table["masked_fraction"]) == [0, 0] and "partial_coverage" not in "".join(table["flags"])
    np.testing.assert_allclose(table["teff_median"][0], table["teff_median"][1], rtol=1e-6)


def test_model_file_that_is_not_ours(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(3)}, other)
    with pytest.raises(RemapDataError, match="not a remap model file") as err:
        Predictor(other)
    assert str(other) in str(err.value)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(RemapDataError, match="torch.load failed"):
        Predictor(text)


def test_model_file_of_a_newer_format(tmp_path):
    member = toy_members(tmp_path)[0]
    payload = torch.load(member, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(RemapDataError, match="newer than this remap understands"):
        Predictor(tmp_path / "future.pt")


def test_model_file_with_tampered_weights(tmp_path):
    member = toy_members(tmp_path)[0]
    payload = torch.load(member, weights_only=True)
    key = next(iter(payload["state_dict"]))
    payload["state_dict"][key] = payload["state_dict"][key] + 1
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(RemapDataError, match="corrupt"):
        Predictor(tmp_path / "tampered.pt")


def test_shipped_model_loads_and_predicts_a_miles_star():
    """The committed model works straight after install: `remap predict` needs no training first."""
    from remap_lib.prediction.inference import default_model_path

    path = default_model_path()
    if not path.exists():
        pytest.fail(f"{path} missing: the package must ship its model")
    p = Predictor()
    assert p.instrument.name.lower() == "miles" and len(p.networks) == 3
    assert p.ood_threshold is not None and p.reference is not None
    # its widening and detector were fitted for these very weights (a re-shipped model must refit them)
    assert p.widening.parts == ("missing", "noise", "intervals") and p.detector is not None
    wave = p.wave
    flux = 1.0 - 0.3 * np.exp(-0.5 * ((wave - 5175.0) / 2.0) ** 2)
    row = p.predict((wave, flux))[0]
    assert row["error"] == ""
    assert 3700 <= row["teff_median"] <= 7100


def test_row_snr_takes_the_lower_of_ivar_and_the_scatter():
    from remap_lib.prediction.inference import row_snr

    rng = np.random.default_rng(0)
    flux = 1 + rng.normal(0, 0.02, (3, 4000))
    mask = np.zeros_like(flux, dtype=bool)
    ivar = np.stack([np.full(4000, 1e8), np.full(4000, 1 / 0.1**2), np.full(4000, np.nan)])
    used, claimed = row_snr(flux, mask, ivar)
    assert used[0] == pytest.approx(50, rel=0.05) and claimed[0] == pytest.approx(1e4)  # overstated: scatter wins
    assert used[1] == pytest.approx(10) and claimed[1] == pytest.approx(10)  # noisier than it looks: believed
    assert used[2] == pytest.approx(50, rel=0.05) and np.isnan(claimed[2])  # no ivar: the scatter
    assert row_snr(np.ones((1, 50)), np.zeros((1, 50), bool))[0][0] == np.inf  # noise-free
    assert row_snr(np.ones((1, 50)), np.ones((1, 50), bool))[0][0] == np.inf  # nothing usable: no claim of noise


def test_noise_inflation_interpolates_in_log_snr():
    from remap_lib.prediction.widening import noise_inflation

    table = {name: [[50.0, 1.0], [10.0, 3.0]] for name in LABEL_NAMES}
    out = noise_inflation(np.array([100.0, 50.0, np.sqrt(500.0), 10.0, 2.0, np.inf]), table)
    np.testing.assert_allclose(out["teff"], [1.0, 1.0, 2.0, 3.0, 3.0, 1.0])
    np.testing.assert_allclose(noise_inflation([3.0, 80.0], {})["feh"], [1.0, 1.0])  # no nodes: no widening


def test_a_model_without_its_own_widening_widens_nothing_and_says_so(model_file, tmp_path):
    import shutil

    other = shutil.copy(model_file, tmp_path / "mine.pt")
    mine = Predictor(other)
    assert mine.widening.parts == () and mine.table_meta()["widening"].startswith("none: no widening")
    assert mine.widening.noise_factors([2.0])["feh"][0] == 1.0
    # a widening file fitted for other weights is not used either
    Widening(**TOY_WIDENING, model_sha256="0" * 64).save(widening_path(other))
    assert Predictor(other).widening.parts == ()
    shutil.copy(widening_path(model_file), widening_path(other))  # the same bytes: the same weights
    assert Predictor(other).widening.parts == ("missing", "noise")
    assert Predictor(model_file).table_meta()["widening"].startswith("fitted for this model file: missing")


def test_updating_one_part_keeps_the_other_and_a_bad_file_is_named(model_file, tmp_path):
    import shutil

    from remap_lib.prediction.widening import update_widening

    path = shutil.copy(model_file, tmp_path / "m.pt")
    sha = sha256_file(path)
    update_widening(path, sha, "missing", {"logg": 1.5}, "test")
    update_widening(path, sha, "noise", {"feh": [[20.0, 2.0]]}, "test 2")
    back = Widening.load(widening_path(path))
    assert back.missing == {"logg": 1.5} and back.noise == {"feh": [[20.0, 2.0]]}
    assert back.fitted_by == {"missing": "test", "noise": "test 2"} and back.model_sha256 == sha
    widening_path(path).write_text("{not json")
    with pytest.raises(ValueError, match=r"m\.widening\.json: not a widening file"):
        Widening.load(widening_path(path))
    with pytest.raises(ValueError, match="part must be one of"):
        update_widening(path, sha, "tilt", {}, "test")


def test_interval_factors_scale_the_half_widths_about_the_median_only(model_file, tmp_path):
    import shutil

    path = shutil.copy(model_file, tmp_path / "m.pt")
    plain = Predictor(path).predict((W, F), pmf=True)
    Widening(intervals={"68": {"teff": 2.0, "feh": 0.5}, "95": {"logg": 0.25}},
             model_sha256=sha256_file(path)).save(widening_path(path))
    scaled = Predictor(path).predict((W, F), pmf=True)
    dwarf = float(plain["logg_median"][0]) >= 3.5  # the factors are for stars called dwarfs only
    for name, level, factor in (("teff", "68", 2.0), ("feh", "68", 0.5), ("logg", "95", 0.25),
                                ("teff", "95", 1.0), ("logg", "68", 1.0)):
        factor = factor if dwarf else 1.0
        lo, hi = ("p16", "p84") if level == "68" else ("p2_5", "p97_5")
        med = float(plain[f"{name}_median"][0])
        assert float(scaled[f"{name}_median"][0]) == med
        for end in (lo, hi):
            want = med + factor * (float(plain[f"{name}_{end}"][0]) - med)
            assert float(scaled[f"{name}_{end}"][0]) == pytest.approx(want, rel=1e-6, abs=1e-4), (name, end)
    for col in ("teff_mean", "teff_std", "teff_pmf"):  # the PMF and its moments stay the network's
        np.testing.assert_array_equal(np.asarray(scaled[col]), np.asarray(plain[col]))


def test_interval_factors_fitted_by_snr_stand_in_for_the_noise_widening(model_file, tmp_path, monkeypatch):
    """With factors of 1 at every S/N node, a noisy star's intervals are the unwidened PMF's, while its
    ``std`` and PMF keep the noise widening; factors of 2 at S/N 10 double its half-widths."""
    import shutil

    from remap_lib.evaluation import conformal

    monkeypatch.setattr(conformal, "GIANT_LOGG", 0.0)  # the toy calls this star a giant: make it a "dwarf"

    path = shutil.copy(model_file, tmp_path / "m.pt")
    noisy = (W, F + np.random.default_rng(5).normal(0, 0.1, F.size))  # S/N ~ 10
    ones = {level: {n: 1.0 for n in LABEL_NAMES} for level in ("68", "95")}
    for factor in (1.0, 2.0):
        by_snr = {"snr": [50.0, 20.0, 10.0], **{level: {n: [1.0, 1.0, factor] for n in LABEL_NAMES}
                                                for level in ("68", "95")}}
        Widening(noise=TOY_WIDENING["noise"], intervals={**ones, "by_snr": by_snr},
                 model_sha256=sha256_file(path)).save(widening_path(path))
        predictor = Predictor(path)
        prep = predictor.prepare(noisy)
        table = predictor.predict_prepared(prep, pmf=True)
        snr = float(table["snr"][0])
        raw, _ = predictor.network(prep.flux, prep.mask)
        wide, _ = predictor.network(prep.flux, prep.mask, predictor.widening.noise_factors([snr]))
        expect = np.interp(np.log(snr), np.log([10.0, 20.0, 50.0]), [factor, 1.0, 1.0])
        assert factor == 1.0 or expect > 1.9  # S/N ~ 10: the factor is exercised
        for name in LABEL_NAMES:
            plain, widened = predictor.bins[name].decode(raw[name]), predictor.bins[name].decode(wide[name])
            med = plain["median"][0]
            for end in ("p16", "p84", "p2_5", "p97_5"):
                want = med + expect * (plain[end][0] - med)
                assert float(table[f"{name}_{end}"][0]) == pytest.approx(want, rel=1e-5, abs=1e-4), (name, end)
            assert float(table[f"{name}_std"][0]) == pytest.approx(widened["std"][0], rel=1e-5)
            np.testing.assert_allclose(table[f"{name}_pmf"][0], wide[name][0], rtol=1e-5)


def test_predict_reloads_the_model_when_its_widening_is_refitted(model_file, tmp_path):
    import os
    import shutil

    from remap_lib.prediction import inference

    path = shutil.copy(model_file, tmp_path / "m.pt")
    first = inference.predict((W, F), model=path)
    assert inference.predict((W, F), model=path)["teff_p16"][0] == first["teff_p16"][0]
    cached = next(iter(inference._CACHE.values()))
    Widening(intervals={"68": {"teff": 3.0}}, model_sha256=sha256_file(path)).save(widening_path(path))
    os.utime(widening_path(path), ns=(1, 1))  # a distinct stamp even on a coarse clock
    again = inference.predict((W, F), model=path)
    assert next(iter(inference._CACHE.values())) is not cached  # reloaded, not the stale predictor
    assert again.meta["widening"].startswith("fitted for this model file: intervals")


def test_interval_factors_leave_the_stars_called_giants_alone():
    widening = Widening(intervals={"68": {"teff": 2.0}, "95": {"teff": 3.0}})
    decoded = {name: {"median": np.array([5000.0, 5000.0]), "p16": np.array([4900.0, 4900.0]),
                      "p84": np.array([5050.0, 5050.0]), "p2_5": np.array([4800.0, 4800.0]),
                      "p97_5": np.array([5100.0, 5100.0])} for name in ("teff", "feh")}
    decoded["logg"] = {"median": np.array([4.4, 2.4]), "p16": np.array([4.3, 2.3]), "p84": np.array([4.5, 2.5]),
                       "p2_5": np.array([4.2, 2.2]), "p97_5": np.array([4.6, 2.6])}
    out = widening.scale_intervals(decoded)
    assert out["teff"]["p16"].tolist() == [4800.0, 4900.0] and out["teff"]["p84"].tolist() == [5100.0, 5050.0]
    assert out["teff"]["p2_5"].tolist() == [4400.0, 4800.0] and out["teff"]["p97_5"].tolist() == [5300.0, 5100.0]
    assert out["feh"]["p16"].tolist() == [4900.0, 4900.0]  # no factor for it
    assert decoded["teff"]["p16"].tolist() == [4900.0, 4900.0]  # input untouched


def test_two_fitting_commands_at_once_keep_both_parts(model_file, tmp_path):
    import shutil
    import subprocess
    import sys
    import time

    from remap_lib.fileio import locked
    from remap_lib.prediction.widening import update_widening

    path = shutil.copy(model_file, tmp_path / "m.pt")
    sha = sha256_file(path)
    other = ("from remap_lib.prediction.widening import update_widening; "
             f"update_widening({str(path)!r}, {sha!r}, 'noise', {{'feh': [[20.0, 2.0]]}}, 'second')")
    with locked(widening_path(path)):  # the first command is between its read and its write
        proc = subprocess.Popen([sys.executable, "-c", other])
        time.sleep(1.0)
        assert proc.poll() is None  # the second waits for the lock
        current = Widening(missing={"logg": 1.5}, model_sha256=sha, fitted_by={"missing": "first"})
        current.save(widening_path(path))
    assert proc.wait(timeout=60) == 0
    back = Widening.load(widening_path(path))
    assert back.missing == {"logg": 1.5} and back.noise == {"feh": [[20.0, 2.0]]}
    update_widening(path, sha, "intervals", {"68": {"teff": 0.6}}, "third")  # not deadlocked by our own lock
    assert Widening.load(widening_path(path)).parts == ("missing", "noise", "intervals")


def test_ivar_widens_and_flags_noisy_input(predictor, toy):
    """ivar scaled by 1e-6 (S/N ~ 0.001) widens the PMFs and flags the row; scaled by 1e6 it cannot make
    the spectrum cleaner than its scatter says, so the row equals the one without ivar."""
    wave = toy.wave
    flux = toy.flux[0] + np.random.default_rng(0).normal(0, 0.01, wave.size)  # S/N ~ 100
    table = predictor.predict([(wave, flux), (wave, flux, np.full(wave.size, 1e-6)),
                               (wave, flux, np.full(wave.size, 1e6))])
    width = np.asarray(table["teff_p84"] - table["teff_p16"])
    assert width[1] > width[0] and width[2] == width[0]
    assert table["snr"][1] == pytest.approx(1e-3, rel=0.01) and table["snr"][2] == table["snr"][0]
    assert "low_snr" in table["flags"][1] and "low_snr" not in table["flags"][0]
    assert "used the lower" in table["notes"][2]


def test_noise_and_missing_widenings_multiply(predictor):
    """A noisy spectrum missing pixels: temperatures × missing × noise factors, each note its own."""
    from remap_lib.prediction.inference import row_snr

    flux = F + np.random.default_rng(5).normal(0, 0.1, F.size)  # S/N ~ 10
    flux[-8:] = np.nan
    prep = predictor.prepare((W, flux, np.full(W.size, 100.0)))
    fraction = prep.mask.mean()
    snr, _ = row_snr(prep.flux, prep.mask, prep.ivar)
    missing, noisy = predictor.widening.missing_factors([fraction]), predictor.widening.noise_factors(snr)
    assert noisy["feh"][0] > 1.5  # S/N ~ 10 widens [Fe/H] well beyond the missing share's factor
    table = predictor.predict_prepared(prep, pmf=True)
    wide, _ = predictor.network(prep.flux, prep.mask, {n: missing[n] * noisy[n] for n in LABEL_NAMES})
    for name in LABEL_NAMES:
        np.testing.assert_allclose(table[f"{name}_pmf"][0], wide[name][0], rtol=1e-5)
    # the widening spreads the intervals about the unwidened median: median, mean and mode are the network's
    plain, _ = predictor.network(prep.flux, prep.mask)
    for name in LABEL_NAMES:
        raw, widened = predictor.bins[name].decode(plain[name]), predictor.bins[name].decode(wide[name])
        for key in ("median", "mean"):  # the table has no mode column
            assert table[f"{name}_{key}"][0] == pytest.approx(raw[key][0], rel=1e-5)
        shift = raw["median"][0] - widened["median"][0]
        assert table[f"{name}_std"][0] == pytest.approx(widened["std"][0], rel=1e-5)
        for key in ("p16", "p84", "p2_5", "p97_5"):  # the toy widening has no conformal factors
            assert table[f"{name}_{key}"][0] == pytest.approx(widened[key][0] + shift, rel=1e-5)
    assert f"no usable data: PMF temperatures ×{missing['teff'][0]:.3f} (teff)" in table["notes"][0]
    assert f"PMF temperatures ×{noisy['teff'][0]:.3f} (teff)" in table["notes"][0]
    assert set(table["flags"][0].split(";")) >= {"partial_coverage", "low_snr"}
