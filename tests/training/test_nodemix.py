import numpy as np
import pytest
import torch
from toydata import TINY_ARCH, toy_set

from remap_lib.training.augment import AugmentConfig
from remap_lib.training.config import TrainConfig
from remap_lib.training.nodemix import lattice_neighbours, mix_with_neighbours
from remap_lib.training.train import Trainer, build_model

# a small lattice with uneven Teff steps (3900, 4000, 4250 K)
LATTICE = np.array([[3900.0, 4.0, 0.0], [4000.0, 4.0, 0.0], [3900.0, 4.5, 0.0], [4250.0, 4.5, 0.0],
                    [4000.0, 4.5, 0.0]])


def test_neighbours_are_one_lattice_step_away_in_every_label():
    table, counts = lattice_neighbours(LATTICE)
    found = [sorted(int(r) for r in table[i, :counts[i]]) for i in range(len(LATTICE))]
    # 3900/4.0 touches 4000/4.0, 3900/4.5 and 4000/4.5 (diagonal); 4250 is two Teff steps away from 3900
    assert found[0] == [1, 2, 4]
    assert found[3] == [1, 4]  # 4250/4.5: 4000/4.0 (diagonal) and 4000/4.5; steps are in distinct values
    assert found[2] == [0, 1, 4]
    assert (table[counts == table.shape[1]] >= 0).all() and (table[0, counts[0]:] == -1).all()


@pytest.mark.parametrize("labels, words", [
    (np.array([[5000.0, 4.0, np.nan]]), "finite labels"),
    (np.column_stack([np.linspace(4000, 7000, 65), np.full(65, 4.0), np.zeros(65)]), "65 distinct values"),
])
def test_labels_that_are_not_a_lattice_are_refused(labels, words):
    with pytest.raises(ValueError, match=words):
        lattice_neighbours(labels)


def _pools():
    flux = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    ivar = torch.tensor([[np.inf, np.inf], [4.0, 0.0], [np.inf, np.inf]])
    mask = torch.tensor([[False, False], [False, True], [False, False]])
    labels = torch.tensor([[4000.0, 4.0, 0.0], [4250.0, 4.0, 0.0], [6000.0, 2.0, -1.0]])
    return flux, ivar, mask, labels


def test_a_mixed_row_is_the_weighted_sum_of_its_node_and_a_neighbour():
    flux, ivar, mask, labels = _pools()
    table, counts = lattice_neighbours(labels[:2].numpy())  # row 2 (rehearsal, say) is past the table
    gen = torch.Generator().manual_seed(0)
    draws = torch.rand(3, 3, generator=torch.Generator().manual_seed(0))  # the same draws: pick, λ, slot
    f, iv, m, lab = mix_with_neighbours(flux, ivar, mask, labels, [0, 1, 2], table, counts, 1.0, gen)
    lam = draws[1]
    # row 0 (4000 K) mixes with row 1 (4250 K): flux, labels and the weighted variance by hand
    assert f[0].tolist() == pytest.approx([lam[0].item(), 1 - lam[0].item()])
    assert lab[0, 0].item() == pytest.approx(4000 * lam[0].item() + 4250 * (1 - lam[0].item()))
    assert iv[0, 0].item() == pytest.approx(4.0 / (1 - lam[0].item()) ** 2)  # node 0 is noise-free
    assert m[0].tolist() == [False, True] and iv[0, 1].item() == 0.0  # masked in the neighbour: masked
    assert f[1].tolist() == pytest.approx([1 - lam[1].item(), lam[1].item()])
    # past the table: untouched
    assert f[2].tolist() == [0.5, 0.5] and lab[2].tolist() == [6000.0, 2.0, -1.0]


def test_share_zero_leaves_the_batch_alone_and_the_pools_are_not_changed():
    flux, ivar, mask, labels = _pools()
    table, counts = lattice_neighbours(labels.numpy())
    f, _, _, lab = mix_with_neighbours(flux, ivar, mask, labels, [1, 0], table, counts, 0.0,
                                       torch.Generator().manual_seed(0))
    assert torch.equal(f, flux[[1, 0]]) and torch.equal(lab, labels[[1, 0]])
    mix_with_neighbours(flux, ivar, mask, labels, [0, 1], table, counts, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(flux, _pools()[0]) and torch.equal(labels, _pools()[3])


def _lattice_set():
    data = toy_set(n=48)
    data.labels[:] = np.column_stack([4000 + 250 * (np.arange(48) % 6), 3.0 + 0.5 * (np.arange(48) // 6 % 4),
                                      np.where(np.arange(48) < 24, 0.0, -0.25)])
    return data.select(data.meta["split"] == "train")


def test_trainer_with_node_mix_is_reproducible_and_differs_from_without(tmp_path):
    data = _lattice_set()

    def run(mix, out):
        torch.manual_seed(0)
        cfg = TrainConfig(epochs=2, batch_size=8, threads=1, augment=AugmentConfig(), node_mix=mix)
        return Trainer(build_model(data.flux.shape[1], **TINY_ARCH), data, cfg, out_dir=out).fit(progress=False)

    a, b, plain = run(0.5, tmp_path / "a"), run(0.5, tmp_path / "b"), run(0.0, tmp_path / "c")
    assert [r["train_total"] for r in a.history] == [r["train_total"] for r in b.history]
    assert [r["train_total"] for r in a.history] != [r["train_total"] for r in plain.history]
    assert "node_mix" not in plain.config.to_dict() and a.config.to_dict()["node_mix"] == 0.5
    assert TrainConfig.from_dict(plain.config.to_dict()).node_mix == 0.0


def test_trainer_refuses_node_mix_on_observed_stars():
    data = toy_set(n=100, kind="observed")
    cfg = TrainConfig(epochs=1, batch_size=8, threads=1, augment=AugmentConfig(), node_mix=0.5)
    with pytest.raises(ValueError, match="grid lattice"):
        Trainer(build_model(data.flux.shape[1], **TINY_ARCH), data, cfg)
