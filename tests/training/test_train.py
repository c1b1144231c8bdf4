import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from toydata import TINY_ARCH, toy_set

from remap_lib.data.dataset import read_dataset, write_dataset
from remap_lib.evaluation.evaluate import predict
from remap_lib.nn.binning import DEFAULT_BINS
from remap_lib.nn.modelfile import load_model
from remap_lib.training.augment import AugmentConfig
from remap_lib.training.config import TrainConfig
from remap_lib.training.train import Trainer, build_model, learning_rate


def config(epochs=3):
    return TrainConfig(epochs=epochs, batch_size=8, swa_start=0.5, threads=1, augment=AugmentConfig())


def make_trainer(data, out_dir, epochs=3):
    torch.manual_seed(0)
    model = build_model(data.flux.shape[1], **TINY_ARCH)
    train, val = data.select(data.meta["split"] == "train"), data.select(data.meta["split"] == "val")
    return Trainer(model, train, config(epochs), val=val, out_dir=out_dir)


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    data = toy_set()
    straight = make_trainer(data, tmp_path / "a").fit(progress=False)
    make_trainer(data, tmp_path / "b").fit(progress=False, stop_after=1)  # "killed" after epoch 1
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = make_trainer(data, tmp_path / "b").fit(progress=False)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    assert [r["train_total"] for r in straight.history] == pytest.approx([r["train_total"] for r in resumed.history])


def test_metrics_log_and_checkpoint_written_per_epoch(tmp_path):
    make_trainer(toy_set(), tmp_path).fit(progress=False, stop_after=2)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,lr,train_teff") and len(lines) == 3
    assert "val_sigma_teff" in lines[0]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def _changed_trainer(data, out_dir, change: str) -> Trainer:
    """The run of :func:`make_trainer` with one of its three inputs changed."""
    train, val = data.select(data.meta["split"] == "train"), data.select(data.meta["split"] == "val")
    torch.manual_seed(1 if change == "starting weights" else 0)  # another pretrained network
    model = build_model(data.flux.shape[1], **TINY_ARCH)
    if change == "training data":  # one training star fewer, as a held-out star would be
        train = train.select(np.arange(1, len(train)))
    cfg = config()
    if change == "settings":
        cfg.lr = cfg.lr / 2
    return Trainer(model, train, cfg, val=val, out_dir=out_dir)


@pytest.mark.parametrize("change", ["settings", "training data", "starting weights"])
def test_changed_run_starts_afresh_and_says_why(tmp_path, capsys, change):
    data = toy_set()
    first = make_trainer(data, tmp_path / "run")
    first.fit(progress=False, stop_after=1)
    capsys.readouterr()
    again = _changed_trainer(data, tmp_path / "run", change)  # rerun in the same folder
    again.fit(progress=False, stop_after=1)
    said = capsys.readouterr().err
    assert f"not resumed, starting afresh ({change} changed since it was written)" in said
    assert again.resume_note in said
    # retrained: the same weights as the changed run in an empty folder, not the stale ones
    fresh = _changed_trainer(data, tmp_path / "fresh", change)
    fresh.fit(progress=False, stop_after=1)
    for name, value in again.model.state_dict().items():
        assert torch.equal(value, fresh.model.state_dict()[name]), name
    assert any(not torch.equal(value, first.model.state_dict()[name])
               for name, value in again.model.state_dict().items() if value.is_floating_point())
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert saved["fingerprint"] == again.fingerprint != first.fingerprint


def test_same_run_resumes_and_says_so(tmp_path, capsys):
    data = toy_set()
    make_trainer(data, tmp_path).fit(progress=False, stop_after=1)
    again = make_trainer(data, tmp_path)
    again.fit(progress=False, stop_after=2)
    assert "resumed after epoch 1" in capsys.readouterr().err
    assert [r["epoch"] for r in again.history] == [1, 2]


def test_checkpoint_without_fingerprint_is_not_resumed(tmp_path, capsys):
    data = toy_set()
    make_trainer(data, tmp_path).fit(progress=False, stop_after=1)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del state["fingerprint"]  # as an older remap wrote it
    torch.save(state, tmp_path / "checkpoint.pt")
    again = make_trainer(data, tmp_path)
    again.fit(progress=False, stop_after=1)
    assert "written by an older remap" in capsys.readouterr().err
    assert again.epoch == 1 and len(again.history) == 1


def test_learning_rate_schedule():
    cfg = TrainConfig(epochs=10, lr=1e-3, warmup_epochs=1, swa_start=0.8, swa_lr=1e-4, min_lr_fraction=0.0)
    assert learning_rate(cfg, 0.5) == pytest.approx(0.5e-3, rel=1e-2)  # warm-up
    assert learning_rate(cfg, 1.0) == pytest.approx(1e-3)  # top of the cosine
    assert learning_rate(cfg, 1.0 + 3.5) == pytest.approx(0.5e-3)  # half-way through an 7-epoch cosine
    assert learning_rate(cfg, 8.2) == 1e-4  # SWA phase


def test_same_seed_same_numbers(tmp_path):
    data = toy_set()
    a = make_trainer(data, None, epochs=2).fit(progress=False)
    b = make_trainer(data, None, epochs=2).fit(progress=False)
    assert [r["train_total"] for r in a.history] == [r["train_total"] for r in b.history]


def _write_toy(tmp_path):
    path = tmp_path / "toy.h5"
    write_dataset(path, toy_set(64))
    return path


def _cli_args(data, out, epochs=2):
    return ["--data", str(data), "--out", str(out), "--epochs", str(epochs), "--batch-size", "16",
            "--stage-channels", "4,8", "--stem-channels", "4", "--embedding-dim", "4", "--threads", "1",
            "--swa-start", "1.0", "--no-augment", "--no-progress"]


def test_cli_trains_and_saves_a_loadable_model(tmp_path):
    from remap_lib.training.train import main

    data = _write_toy(tmp_path)
    assert main(_cli_args(data, tmp_path / "run")) == 0
    model, info = load_model(tmp_path / "run" / "model.pt")
    assert info["instrument"].name == "tiny" and set(info["bins"]) == {"teff", "logg", "feh"}
    toy = read_dataset(data)
    pred = predict(model, toy.flux[:3], toy.mask[:3], info["bins"])
    assert np.all(np.isfinite(pred["teff"]["median"]))


def test_torchrun_two_processes_matches_single_process(tmp_path):
    """DDP on CPU (gloo): same global batch, so the loss curve follows the single-process one."""
    data = _write_toy(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "remap_lib.training.train", *_cli_args(data, tmp_path / "one", 3)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "remap_lib.training.train", *_cli_args(data, tmp_path / "two", 3)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    def losses(run):
        lines = (tmp_path / run / "metrics.csv").read_text().splitlines()
        col = lines[0].split(",").index("train_total")
        return np.array([float(line.split(",")[col]) for line in lines[1:]])

    one, two = losses("one"), losses("two")
    assert len(one) == len(two) == 3
    # batch norm sees 8 spectra per rank instead of 16: close, not identical
    assert np.allclose(one, two, rtol=0.1), (one, two)
    assert (tmp_path / "two" / "model.pt").exists()


def test_frozen_backbone_does_not_change(tmp_path):
    data = toy_set()
    torch.manual_seed(0)
    model = build_model(data.flux.shape[1], **TINY_ARCH)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("stem", "backbone"))}
    head_before = model.heads["teff"].weight.detach().clone()
    cfg = TrainConfig(epochs=1, batch_size=8, swa_start=1.0, threads=1, freeze_epochs=1)
    Trainer(model, data.select(data.meta["split"] == "train"), cfg).fit(progress=False)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # weights and BN statistics
    assert not torch.equal(after["heads.teff.weight"], head_before)  # the heads did learn


def test_rehearsal_mixes_a_fresh_draw_each_epoch_and_keeps_bn_on_the_target(tmp_path):
    data = toy_set()
    train = data.select(data.meta["split"] == "train")  # 40 rows
    synth = toy_set(n=30, seed=5, id_prefix="g", n_val=0)
    torch.manual_seed(0)
    trainer = Trainer(build_model(data.flux.shape[1], **TINY_ARCH), train, config(), out_dir=tmp_path,
                      rehearsal=synth, rehearsal_ratio=0.5)
    first, second = trainer._epoch_order(0), trainer._epoch_order(1)
    for order in (first, second):  # every training row once, plus 20 of the 30 rehearsal rows
        assert sorted(order[order < 40].tolist()) == list(range(40))
        assert (order >= 40).sum() == 20 and len(set(order.tolist())) == 60
    assert set(first[first >= 40].tolist()) != set(second[second >= 40].tolist())
    # rehearsal rows get the synthetic soft-target width, training rows the configured one
    assert trainer.row_sigma[0].tolist() == list(config().label_sigma)
    assert trainer.row_sigma[45].tolist() == [50.0, 0.1, 0.05]
    assert "rehearsal" in trainer.fingerprint
    trainer.fit(progress=False, stop_after=1)
    # a rerun without rehearsal must not resume it
    torch.manual_seed(0)
    plain = Trainer(build_model(data.flux.shape[1], **TINY_ARCH), train, config(), out_dir=tmp_path)
    assert not plain.load_checkpoint() and "rehearsal changed" in plain.resume_note


def test_distillation_rows_learn_the_teacher_pmfs_and_leave_the_rehearsal_draws_alone(tmp_path):
    data = toy_set()
    train = data.select(data.meta["split"] == "train")  # 40 rows
    synth = toy_set(n=30, seed=5, id_prefix="g", n_val=0)
    giants = toy_set(n=12, seed=6, id_prefix="u", n_val=0)
    teacher = {name: np.eye(b.nbins, dtype=np.float32)[np.arange(12) % b.nbins] for name, b in DEFAULT_BINS.items()}

    def trainer(**distill):
        torch.manual_seed(0)
        return Trainer(build_model(data.flux.shape[1], **TINY_ARCH), train, config(), out_dir=tmp_path,
                       rehearsal=synth, rehearsal_ratio=0.5, **distill)

    plain, distilled = trainer(), trainer(distill=giants, distill_targets=teacher, distill_ratio=0.25)
    order = distilled._epoch_order(2)
    assert sorted(order[order < 40].tolist()) == list(range(40))
    assert ((order >= 40) & (order < 70)).sum() == 20 and (order >= 70).sum() == 10  # 0.25 x 40 of the 12
    rehearsed = plain._epoch_order(2)
    assert set(rehearsed[rehearsed >= 40].tolist()) == set(order[(order >= 40) & (order < 70)].tolist())
    assert np.isnan(distilled.labels[70:].numpy()).all()  # giants' labels are never targets
    # a distillation row's target is its teacher PMF; a labelled row's is unchanged
    rows = torch.tensor([3, 72])
    out = {"logits": {n: torch.zeros(2, b.nbins) for n, b in DEFAULT_BINS.items()}, "embedding": torch.zeros(2, 4)}
    seen = {}
    distilled.loss_fn.forward = lambda logits, targets, *rest: (seen.update(targets), (torch.zeros(()), {}))[1]
    distilled._loss(out, distilled.labels[rows], distilled.row_sigma[rows.numpy()], rows)
    for name, b in DEFAULT_BINS.items():
        assert torch.equal(seen[name][1], torch.as_tensor(teacher[name][2]))
        assert seen[name][0].sum().item() == pytest.approx(1.0) and seen[name][0].argmax() == b.bin_index(
            train.labels[3:4, list(DEFAULT_BINS).index(name)])[0]
    assert "distillation" in distilled.fingerprint and "distillation" not in plain.fingerprint
    with pytest.raises(ValueError, match="one target PMF per label for each of its 12"):
        trainer(distill=giants, distill_targets={n: t[:5] for n, t in teacher.items()}, distill_ratio=0.25)


def test_no_rehearsal_is_the_plain_run():
    data = toy_set()
    train = data.select(data.meta["split"] == "train")
    torch.manual_seed(0)
    trainer = Trainer(build_model(data.flux.shape[1], **TINY_ARCH), train, config(), rehearsal=toy_set(n=10),
                      rehearsal_ratio=0.0)
    assert trainer.n_main == len(trainer.flux) == 40 and "rehearsal" not in trainer.fingerprint
    assert torch.equal(trainer._epoch_order(3), torch.randperm(40, generator=torch.Generator().manual_seed(303)))


@pytest.mark.parametrize("bn_rows, seen", [("training", 40), ("epoch", 60)])
def test_swa_batch_norm_is_recomputed_on_the_chosen_rows(bn_rows, seen):
    data = toy_set()
    train = data.select(data.meta["split"] == "train")  # 40 rows
    torch.manual_seed(0)
    cfg = replace(config(epochs=2), swa_bn_rows=bn_rows)
    trainer = Trainer(build_model(data.flux.shape[1], **TINY_ARCH), train, cfg,
                      rehearsal=toy_set(n=30, seed=5, id_prefix="g", n_val=0), rehearsal_ratio=0.5)
    trainer.fit(progress=False)
    rows = []
    augment = trainer.augmenter
    trainer.augmenter = lambda flux, *rest, **kw: (rows.append(len(flux)), augment(flux, *rest, **kw))[1]
    trainer.final_model()
    assert sum(rows) == seen  # the 40 training rows, or an epoch's 40 + 20 rehearsal rows
    assert ("swa_bn_rows" in cfg.to_dict()) == (bn_rows != "training")  # the default leaves old configs as they were
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_swa_batch_norm_rows_are_refused():
    data = toy_set()
    with pytest.raises(ValueError, match="swa_bn_rows must be one of"):
        Trainer(build_model(data.flux.shape[1], **TINY_ARCH), data, replace(config(), swa_bn_rows="giants"))


def test_a_finished_run_applies_a_new_swa_batch_norm_choice_without_training_again(tmp_path):
    data = toy_set()
    train = data.select(data.meta["split"] == "train")
    synth = toy_set(n=30, seed=5, id_prefix="g", n_val=0)

    def fit(bn_rows):
        torch.manual_seed(0)
        trainer = Trainer(build_model(data.flux.shape[1], **TINY_ARCH), train,
                          replace(config(epochs=2), swa_bn_rows=bn_rows), out_dir=tmp_path,
                          rehearsal=synth, rehearsal_ratio=0.5)
        return trainer, trainer.fit(progress=False)

    _, first = fit("training")
    trainer, second = fit("epoch")
    assert "resumed after epoch 2" in trainer.resume_note  # the finished run, not trained again
    assert second.history == first.history
    before, after = first.model.state_dict(), second.model.state_dict()
    weights = [k for k, v in before.items() if "running" not in k and v.is_floating_point()]
    assert all(torch.equal(before[k], after[k]) for k in weights)  # the same SWA average
    assert not torch.equal(before["stem.1.running_mean"], after["stem.1.running_mean"])  # other BN statistics


def test_feature_alignment_classes_rows_without_reading_the_distilled_labels(tmp_path):
    data = toy_set()
    train = data.select(data.meta["split"] == "train")  # 40 rows
    synth = toy_set(n=30, seed=5, id_prefix="g", n_val=0)
    giants = toy_set(n=12, seed=6, id_prefix="u", n_val=0)
    logg_bins = DEFAULT_BINS["logg"]
    # the teacher reads the first six distilled spectra at the lowest log g bin, the rest at the highest
    low, high = np.eye(logg_bins.nbins)[0], np.eye(logg_bins.nbins)[-1]
    teacher = {name: np.zeros((12, b.nbins), dtype=np.float32) for name, b in DEFAULT_BINS.items()}
    teacher["logg"] = np.array([low] * 6 + [high] * 6, dtype=np.float32)
    cfg = replace(config(epochs=2), align_weight=1.0)
    torch.manual_seed(0)
    trainer = Trainer(build_model(data.flux.shape[1], **TINY_ARCH), train, cfg, out_dir=tmp_path, rehearsal=synth,
                      rehearsal_ratio=0.5, distill=giants, distill_targets=teacher, distill_ratio=0.5)
    labelled = np.concatenate([train.labels[:, 1], synth.labels[:, 1]])
    expected = np.where(np.isfinite(labelled), labelled < 3.5, -1)
    assert trainer.align_giant[:70].tolist() == expected.tolist()
    assert trainer.align_giant[70:].tolist() == [1] * 6 + [0] * 6
    result = trainer.fit(progress=False)
    assert all(np.isfinite(row["train_align"]) for row in result.history)
    assert "align_weight" in cfg.to_dict() and "align_weight" not in config().to_dict()  # old fingerprints kept


def test_feature_alignment_needs_rehearsal():
    data = toy_set()
    with pytest.raises(ValueError, match="needs rehearsal"):
        Trainer(build_model(data.flux.shape[1], **TINY_ARCH), data.select(data.meta["split"] == "train"),
                replace(config(), align_weight=1.0))
