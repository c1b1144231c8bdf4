"""Fine-tuning and ensembles: role splits, the frozen backbone, K members, PMF averaging, temperatures."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import toydata
from toydata import INSTRUMENT, TINY_ARCH

from remap_lib.data.dataset import LABEL_NAMES
from remap_lib.nn.binning import DEFAULT_BINS
from remap_lib.nn.modelfile import load_model, save_model
from remap_lib.training import profiles
from remap_lib.training.augment import AugmentConfig
from remap_lib.training.train import build_model
from remap_lib.training.transfer import (
    DISTILL_RATIO,
    LITERATURE_SIGMA,
    NOISE_MATCHED_SNR_MIN,
    OBSERVED_AUGMENT,
    REHEARSAL_RATIO,
    by_role,
    ensemble_pmfs,
    finetune,
    finetune_config,
    finetune_ensemble,
    load_ensemble,
    summarize,
    teacher_pmfs,
)


def toy_set(n=24, seed=0):
    return toydata.toy_set(n, seed, id_prefix="m", kind="observed")


@pytest.fixture(scope="module")
def data():
    return toy_set()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data):
    torch.manual_seed(0)
    model = build_model(data.flux.shape[1], DEFAULT_BINS, **TINY_ARCH)
    return save_model(tmp_path_factory.mktemp("pre") / "pretrained.pt", model, DEFAULT_BINS, INSTRUMENT,
                      label_stats=([5500.0, 3.0, -0.7], [800.0, 1.2, 0.7]))


def tiny_config(**kw):
    base = dict(epochs=1, batch_size=8, freeze_epochs=1, swa_start=1.0, threads=1, augment=AugmentConfig.none())
    return finetune_config(**{**base, **kw})


# ---------------------------------------------------------------- by_role / finetune_config
def test_by_role_splits_rows_and_unknown_ids_go_to_other(data):
    splits = pd.DataFrame({"id": ["m0000", "m0001", "m0002", "m0005", "m9999"],
                           "role": ["finetune", "validation", "finetune", "calibration", "finetune"]})
    sets = by_role(data.select(np.arange(8)), splits)
    assert list(sets) == ["calibration", "finetune", "other", "validation"]  # sorted
    assert list(sets["finetune"].ids) == ["m0000", "m0002"]
    assert list(sets["validation"].ids) == ["m0001"]
    assert list(sets["calibration"].ids) == ["m0005"]
    assert list(sets["other"].ids) == ["m0003", "m0004", "m0006", "m0007"]
    # rows keep their spectra and labels
    np.testing.assert_array_equal(sets["finetune"].flux, data.flux[[0, 2]])
    np.testing.assert_array_equal(sets["calibration"].labels, data.labels[[5]])
    assert sum(len(s) for s in sets.values()) == 8


def test_finetune_config_defaults_and_overrides():
    cfg = finetune_config()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.freeze_epochs, cfg.backbone_lr_factor) == (40, 32, 1e-3, 5, 0.1)
    assert cfg.label_sigma == LITERATURE_SIGMA and cfg.augment == OBSERVED_AUGMENT and cfg.warmup_epochs == 0.5
    cfg = finetune_config(epochs=3, seed=7, gamma=0.0, warmup_epochs=0.0)
    assert (cfg.epochs, cfg.seed, cfg.gamma, cfg.warmup_epochs) == (3, 7, 0.0, 0.0)
    assert cfg.label_sigma == LITERATURE_SIGMA  # untouched fields keep the fine-tuning values
    with pytest.raises(TypeError):
        finetune_config(no_such_field=1)


def test_noise_snr_min_lowers_only_the_augmentations_noise_floor():
    cfg = finetune_config(noise_snr_min=5)
    assert cfg.augment.snr_range == (5.0, OBSERVED_AUGMENT.snr_range[1])
    assert replace(cfg.augment, snr_range=OBSERVED_AUGMENT.snr_range) == OBSERVED_AUGMENT
    assert finetune_config(noise_snr_min=None).augment == OBSERVED_AUGMENT
    # remap's recipe (the profiles) lowers it; the bare config keeps the milder augmentation
    shipped = profiles.resolve("finetune", "default")
    assert shipped["noise_snr_min"] == NOISE_MATCHED_SNR_MIN < OBSERVED_AUGMENT.snr_range[0]
    assert shipped["distill"] == DISTILL_RATIO > 0 and shipped["rehearsal"] == REHEARSAL_RATIO > 0


# ---------------------------------------------------------------- finetune
def _backbone(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(("stem", "backbone"))}


def test_finetune_keeps_backbone_frozen_during_freeze_epochs(pretrained, data, tmp_path):
    start, info = load_model(pretrained)
    before = _backbone(start)
    result, trainer = finetune(pretrained, data, None, tiny_config(epochs=1, freeze_epochs=1), tmp_path / "ft",
                               progress=False)
    after = result.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # weights and BN statistics
    assert not torch.equal(after["heads.teff.weight"], start.state_dict()["heads.teff.weight"])
    assert (tmp_path / "ft" / "checkpoint.pt").exists()
    # the pretrained label standardization is carried over, not re-estimated from the new stars
    assert trainer.label_stats == (info["label_stats"][0], info["label_stats"][1])
    assert len(result.history) == 1


def test_finetune_unfreezes_backbone_after_freeze_epochs(pretrained, data, tmp_path):
    before = _backbone(load_model(pretrained)[0])
    cfg = tiny_config(epochs=2, freeze_epochs=1, augment=OBSERVED_AUGMENT)  # the real fine-tuning augmentation
    result, _ = finetune(pretrained, data, data.select(np.arange(8)), cfg, tmp_path, progress=False)
    after = result.model.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in before.items() if k.endswith("weight"))
    assert np.isfinite(result.history[-1]["val_sigma_teff"])


def test_finetune_ensemble_writes_k_distinct_members(pretrained, data, tmp_path):
    paths = finetune_ensemble(pretrained, data, None, tiny_config(freeze_epochs=0, seed=3), tmp_path, members=2,
                              progress=False)
    assert paths == [tmp_path / "member_0.pt", tmp_path / "member_1.pt"]
    infos = [load_model(p)[1] for p in paths]
    assert [i["train_config"]["seed"] for i in infos] == [3, 4]
    assert infos[0]["weights_sha256"] != infos[1]["weights_sha256"]
    assert all(i["extra"]["pretrained"] == str(pretrained) for i in infos)
    assert all(i["instrument"].name == "tiny" for i in infos)


# ---------------------------------------------------------------- ensembles
@pytest.fixture(scope="module")
def two_models():
    torch.manual_seed(1)
    a = build_model(toy_set().flux.shape[1], DEFAULT_BINS, **TINY_ARCH).eval()
    b = build_model(toy_set().flux.shape[1], DEFAULT_BINS, **TINY_ARCH).eval()
    return a, b


@torch.no_grad()
def _logits(model, flux):
    model.eval()
    return dict(model(torch.as_tensor(flux))["logits"])


def test_ensemble_of_one_is_softmax_of_logits(two_models, data):
    model = two_models[0]
    flux = data.flux[:5]
    z = _logits(model, flux)
    pmfs = ensemble_pmfs([model], flux, batch_size=2)  # several batches
    for name in LABEL_NAMES:
        assert pmfs[name].shape == (5, DEFAULT_BINS[name].nbins)
        np.testing.assert_allclose(pmfs[name], torch.softmax(z[name], -1).numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(pmfs[name].sum(axis=1), 1.0, rtol=1e-5)


def test_ensemble_temperature_divides_logits(two_models, data):
    model = two_models[0]
    z = _logits(model, data.flux[:4])
    pmfs = ensemble_pmfs([model], data.flux[:4], temperatures=[{"teff": 2.0, "feh": 0.5}])
    np.testing.assert_allclose(pmfs["teff"], torch.softmax(z["teff"] / 2.0, -1).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(pmfs["feh"], torch.softmax(z["feh"] / 0.5, -1).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(pmfs["logg"], torch.softmax(z["logg"], -1).numpy(), rtol=1e-5, atol=1e-7)  # T = 1
    # a temperature > 1 flattens the PMF: its peak drops
    assert np.all(pmfs["teff"].max(axis=1) < torch.softmax(z["teff"], -1).numpy().max(axis=1))


def test_ensemble_averages_members(two_models, data):
    a, b = two_models
    flux = data.flux[:4]
    one = ensemble_pmfs([a], flux)
    twice = ensemble_pmfs([a, a], flux)
    both = ensemble_pmfs([a, b], flux, temperatures=[None, {}])
    only_b = ensemble_pmfs([b], flux)
    for name in LABEL_NAMES:
        np.testing.assert_allclose(twice[name], one[name], rtol=1e-6)
        np.testing.assert_allclose(both[name], 0.5 * (one[name] + only_b[name]), rtol=1e-6)


def test_teacher_pmfs_teach_only_the_chosen_labels(two_models, data):
    model = two_models[0]
    every = teacher_pmfs(model, data.select(np.arange(4)))
    logg_only = teacher_pmfs(model, data.select(np.arange(4)), ("logg",))
    np.testing.assert_allclose(every["logg"], ensemble_pmfs([model], data.flux[:4])["logg"], rtol=1e-6)
    np.testing.assert_array_equal(logg_only["logg"], every["logg"])
    for name in ("teff", "feh"):  # all-zero rows: unknown to the loss, so those heads learn nothing here
        assert logg_only[name].shape == every[name].shape and not logg_only[name].any()
    for bad in ((), ("vsini",)):
        with pytest.raises(ValueError, match="subset"):
            teacher_pmfs(model, data.select(np.arange(4)), bad)


def test_load_ensemble_reads_temperatures_from_extra(two_models, tmp_path):
    a, b = two_models
    p0 = save_model(tmp_path / "m0.pt", a, DEFAULT_BINS, INSTRUMENT, extra={"temperatures": {"teff": 1.5}})
    p1 = save_model(tmp_path / "m1.pt", b, DEFAULT_BINS, INSTRUMENT)
    models, temps, info = load_ensemble([p0, p1])
    assert len(models) == 2 and temps == [{"teff": 1.5}, {}]
    assert info["extra"] == {"temperatures": {"teff": 1.5}}  # the first file's info
    assert set(info["bins"]) == set(LABEL_NAMES)
    with pytest.raises(ValueError, match="at least one"):
        load_ensemble([])


def test_summarize_decodes_every_label(two_models, data):
    pmfs = ensemble_pmfs([two_models[0]], data.flux[:3])
    out = summarize(pmfs, DEFAULT_BINS)
    assert set(out) == set(LABEL_NAMES)
    for name in LABEL_NAMES:
        assert set(out[name]) == {"mean", "std", "median", "mode", "p16", "p84", "p2_5", "p97_5", "pmf"}
        assert out[name]["pmf"] is pmfs[name]
        np.testing.assert_allclose(out[name]["median"], DEFAULT_BINS[name].decode(pmfs[name])["median"])
        assert np.all(out[name]["p16"] <= out[name]["median"]) and np.all(out[name]["median"] <= out[name]["p84"])


# ---------------------------------------------------------------- reruns never reuse stale members
def _members(paths):
    return [load_model(p)[0].state_dict() for p in paths]


@pytest.mark.parametrize("change", ["holdout", "pretrained", "parameter"])
def test_rerun_with_a_change_retrains_every_member(tmp_path, data, pretrained, capsys, change):
    """A finished ensemble in the folder; rerun with one change: the members are retrained, and it says why."""
    out = tmp_path / "finetune"
    before = _members(finetune_ensemble(pretrained, data, None, tiny_config(epochs=2), out, members=2,
                                        progress=False))
    capsys.readouterr()
    train, start, cfg = data, pretrained, tiny_config(epochs=2)
    if change == "holdout":  # two stars held out of fine-tuning
        train = data.select(np.arange(2, len(data)))
    elif change == "pretrained":  # notebook 02 rerun with other settings
        torch.manual_seed(5)
        start = save_model(tmp_path / "other_pretrained.pt", build_model(data.flux.shape[1], DEFAULT_BINS,
                           **TINY_ARCH), DEFAULT_BINS, INSTRUMENT, label_stats=([5500.0, 3.0, -0.7], [800.0, 1.2, 0.7]))
    else:
        cfg = tiny_config(epochs=2, lr=5e-4)
    after = _members(finetune_ensemble(start, train, None, cfg, out, members=2, progress=False))
    said = capsys.readouterr().err
    why = {"holdout": "training data", "pretrained": "starting weights", "parameter": "settings"}[change]
    assert said.count(f"starting afresh ({why} changed") == 2  # once per member
    for old, new in zip(before, after, strict=True):
        assert any(not torch.equal(old[k], new[k]) for k in old if old[k].is_floating_point())


def test_rerun_unchanged_reuses_the_finished_members(tmp_path, data, pretrained, capsys):
    out = tmp_path / "finetune"
    before = _members(finetune_ensemble(pretrained, data, None, tiny_config(epochs=2), out, members=2,
                                        progress=False))
    after = _members(finetune_ensemble(pretrained, data, None, tiny_config(epochs=2), out, members=2,
                                       progress=False))
    assert capsys.readouterr().err.count("resumed after epoch 2") == 2
    for old, new in zip(before, after, strict=True):
        assert all(torch.equal(old[k], new[k]) for k in old)


def test_smaller_rerun_removes_extra_members_and_stale_calibrations(tmp_path, data, pretrained, capsys):
    out = tmp_path / "finetune"
    paths = finetune_ensemble(pretrained, data, None, tiny_config(), out, members=3, progress=False)
    for path in paths:  # as `remap calibrate` leaves them
        model, info = load_model(path)
        save_model(path.with_name(path.stem + "_calibrated.pt"), model, info["bins"], info["instrument"],
                   extra={"temperatures": {}})
    finetune_ensemble(pretrained, data.select(np.arange(1, len(data))), None, tiny_config(), out, members=2,
                      progress=False)
    said = capsys.readouterr().err
    left = sorted(p.name for p in out.iterdir())
    assert left == ["member_0", "member_0.pt", "member_1", "member_1.pt"]
    assert "removed, it calibrated earlier weights of member 0" in said
    assert "left by an earlier ensemble of more than 2 members" in said
