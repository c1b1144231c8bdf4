"""remap_lib.nn.modelfile ensembles: one file, every member checked, weights_only loading, clear refusals."""

from __future__ import annotations

import pytest
import torch
from toydata import INSTRUMENT, TINY_ARCH
from toymodel import TEMPERATURES, toy_members

from remap_lib.fileio import RemapDataError
from remap_lib.nn.binning import DEFAULT_BINS, LabelBins
from remap_lib.nn.model import DeepREMAP, ModelConfig
from remap_lib.nn.modelfile import ENSEMBLE_FORMAT, load_members, load_model, save_ensemble, save_model
from remap_lib.spectra.instruments import Instrument


def test_ensemble_round_trip_keeps_members_temperatures_and_reference(tmp_path):
    members = toy_members(tmp_path)
    ref = {"embedding": torch.eye(4), "threshold": 0.3, "ids": ["a", "b", "c", "d"]}
    path = save_ensemble(tmp_path / "e.pt", members, reference=ref)
    payload = torch.load(path, weights_only=True)  # plain containers only: nothing to unpickle
    assert payload["format"] == ENSEMBLE_FORMAT and len(payload["members"]) == 2
    pairs, bundle = load_members(path)
    assert [info["extra"]["temperatures"] for _, info in pairs] == list(TEMPERATURES)
    assert bundle["reference"]["threshold"] == 0.3 and bundle["reference"]["ids"] == ["a", "b", "c", "d"]
    single, _ = load_model(members[1])
    x = torch.ones(2, INSTRUMENT.wavelength_grid().size)
    with torch.no_grad():
        torch.testing.assert_close(pairs[1][0](x)["logits"]["feh"], single(x)["logits"]["feh"])


def test_single_model_file_loads_as_one_member(tmp_path):
    pairs, bundle = load_members(toy_members(tmp_path)[0])
    assert len(pairs) == 1 and bundle["reference"] == {}


def test_load_model_points_ensembles_to_load_members(tmp_path):
    path = save_ensemble(tmp_path / "e.pt", toy_members(tmp_path))
    with pytest.raises(RemapDataError, match="load_members"):
        load_model(path)


def test_members_must_share_instrument_and_bins(tmp_path):
    first = toy_members(tmp_path)[0]
    other = Instrument("other", 5000.0, 5114.0, medium="air", fwhm=3.0, pixel=0.9)
    model = DeepREMAP(ModelConfig(npix=other.wavelength_grid().size, **TINY_ARCH))
    second = save_model(tmp_path / "other.pt", model, DEFAULT_BINS, other)
    path = save_ensemble(tmp_path / "mixed.pt", [first, second])
    with pytest.raises(RemapDataError, match="disagree on instrument or label bins"):
        load_members(path)
    bins = {**DEFAULT_BINS, "feh": LabelBins.uniform("feh", -2.7, 0.7, 0.1, "dex")}
    model = DeepREMAP(ModelConfig(npix=INSTRUMENT.wavelength_grid().size, **TINY_ARCH,
                                  head_bins={"teff": 68, "logg": 49, "feh": 34}))
    third = save_model(tmp_path / "bins.pt", model, bins, INSTRUMENT)
    with pytest.raises(RemapDataError, match="disagree"):
        load_members(save_ensemble(tmp_path / "mixed2.pt", [first, third]))


def test_save_ensemble_checks_members_first(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    with pytest.raises(RemapDataError, match="not a remap model file"):
        save_ensemble(tmp_path / "e.pt", [bad])
    assert not (tmp_path / "e.pt").exists()
    with pytest.raises(ValueError, match="at least one"):
        save_ensemble(tmp_path / "e.pt", [])


def test_incompatible_architecture_is_named(tmp_path):
    member = toy_members(tmp_path)[0]
    payload = torch.load(member, weights_only=True)
    payload["model_config"]["stage_channels"] = [8, 8]
    from remap_lib.nn.modelfile import weights_sha256

    payload["weights_sha256"] = weights_sha256(payload["state_dict"])
    torch.save(payload, tmp_path / "arch.pt")
    with pytest.raises(RemapDataError, match="incompatible with this remap version"):
        load_members(tmp_path / "arch.pt")
