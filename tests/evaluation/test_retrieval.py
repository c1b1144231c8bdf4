"""Embedding index: hand-built unit vectors with known neighbours, exclusion, chunking, files, PCA."""

import math

import matplotlib

matplotlib.use("Agg")  # no display on test machines

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from remap_lib.evaluation.retrieval import EmbeddingIndex, embed, knn_label_estimate, pca_2d, plot_projection  # noqa: E402
from remap_lib.fileio import RemapDataError  # noqa: E402
from remap_lib.nn.model import DeepREMAP, ModelConfig  # noqa: E402

torch.set_num_threads(2)

ANGLES = np.array([0.0, 30.0, 90.0, 180.0])  # degrees on the unit circle


def unit(deg):
    rad = np.radians(np.atleast_1d(deg))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def chord(deg):
    """Distance between unit vectors an angle ``deg`` apart: 2 sin(θ/2)."""
    return 2.0 * np.sin(np.radians(np.asarray(deg)) / 2.0)


LABELS = np.array([[5000.0, 4.5, 0.0], [5100.0, 4.4, -0.1], [6000.0, 3.0, -1.0], [4000.0, 1.5, -2.0]])
INDEX = EmbeddingIndex(unit(ANGLES), LABELS, ids=["a", "b", "c", "d"], source="MILES")


def test_nearest_order_and_distances():
    nb = INDEX.query(unit([0.0, 100.0]), k=4)
    # From 0°: 0°, 30°, 90°, 180° in that order.
    assert nb.indices[0].tolist() == [0, 1, 2, 3]
    assert np.allclose(nb.distances[0], [0.0, chord(30), math.sqrt(2.0), 2.0])
    # From 100°: 90° (10° away), 30° (70°), 180° (80°), 0° (100°).
    assert nb.indices[1].tolist() == [2, 1, 3, 0]
    assert np.allclose(nb.distances[1], chord([10, 70, 80, 100]))
    assert nb.ids[1].tolist() == ["c", "b", "d", "a"] and set(nb.source.ravel()) == {"MILES"}
    assert np.array_equal(nb.labels[1, 0], LABELS[2])
    assert nb.table(1)[0] == {"rank": 0, "index": 2, "id": "c", "source": "MILES",
                              "distance": pytest.approx(chord(10)), "teff": 6000.0, "logg": 3.0, "feh": -1.0}


def test_queries_are_normalized_and_k_partial():
    nb = INDEX.query(7.0 * unit([100.0]), k=2)  # length does not matter: only the direction
    assert nb.indices.tolist() == [[2, 1]] and nb.distances.shape == (1, 2)
    with pytest.raises(ValueError, match="k must be"):
        INDEX.query(unit([0.0]), k=5)
    with pytest.raises(ValueError, match="dimension"):
        INDEX.query(np.ones((1, 3)), k=1)


def test_exclude_self():
    nb = INDEX.query(unit(ANGLES), k=1, exclude_self_ids=["a", "b", "c", "d"])
    # Without itself, each point's nearest: a->b (30°), b->a (30°), c->b (60°), d->c (90°).
    assert nb.ids[:, 0].tolist() == ["b", "a", "b", "c"]
    assert np.allclose(nb.distances[:, 0], chord([30, 30, 60, 90]))
    # Asking for every row leaves one slot empty: index −1, distance inf, NaN labels.
    full = INDEX.query(unit([0.0]), k=4, exclude_self_ids=["a"])
    assert full.indices[0].tolist() == [1, 2, 3, -1]
    assert full.distances[0, -1] == np.inf and np.isnan(full.labels[0, -1]).all() and full.ids[0, -1] == ""


def test_chunked_equals_unchunked():
    rng = np.random.default_rng(0)
    index = EmbeddingIndex(rng.standard_normal((300, 8)), rng.standard_normal((300, 3)))
    q = rng.standard_normal((50, 8))
    ids = [str(i) for i in range(50)]  # queries 0..49 are excluded from their own id
    one = index.query(q, k=7, exclude_self_ids=ids, chunk_size=10_000)
    many = index.query(q, k=7, exclude_self_ids=ids, chunk_size=7)
    assert np.array_equal(one.indices, many.indices)
    assert np.allclose(one.distances, many.distances)
    assert np.all(np.diff(one.distances, axis=1) >= 0)  # nearest first
    # Brute force agrees.
    x = index.embeddings
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = np.linalg.norm(qn[:, None] - x[None], axis=2)
    d[np.arange(50), np.arange(50)] = np.inf
    assert np.array_equal(np.argsort(d, axis=1)[:, :7], one.indices)


def test_merge_searches_both():
    grid = EmbeddingIndex(unit([45.0]), [[5500.0, 4.0, 0.2]], ids=["g0"], source="grid")
    both = INDEX.merge(grid)
    assert len(both) == 5 and both.source.tolist() == ["MILES"] * 4 + ["grid"]
    nb = both.query(unit([50.0]), k=2)
    assert nb.ids[0].tolist() == ["g0", "b"] and nb.source[0].tolist() == ["grid", "MILES"]
    with pytest.raises(ValueError, match="dimension"):
        INDEX.merge(EmbeddingIndex(np.ones((1, 3))))


def test_knn_label_estimate():
    # From 10°: neighbours 0° and 30° -> mean of their labels.
    est = knn_label_estimate(INDEX, unit([10.0]), k=2)
    assert np.allclose(est, [[5050.0, 4.45, -0.05]])
    # NaN labels of a neighbour are skipped, not propagated.
    lab = LABELS.copy()
    lab[1, 2] = np.nan
    est = knn_label_estimate(EmbeddingIndex(unit(ANGLES), lab), unit([10.0]), k=2)
    assert np.allclose(est, [[5050.0, 4.45, 0.0]])


def test_save_load_round_trip(tmp_path):
    path = INDEX.save(tmp_path / "sub" / "index.npz")
    back = EmbeddingIndex.load(path)
    assert np.array_equal(back.embeddings, INDEX.embeddings) and np.array_equal(back.labels, LABELS)
    assert back.ids.tolist() == ["a", "b", "c", "d"] and back.source.tolist() == ["MILES"] * 4
    assert [p.name for p in path.parent.iterdir()] == ["index.npz"]  # no temporary left behind


def test_bad_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(RemapDataError, match="empty.npz"):
        EmbeddingIndex.load(empty)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(RemapDataError, match="junk.npz"):
        EmbeddingIndex.load(junk)
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(INDEX.save(tmp_path / "ok.npz").read_bytes()[:200])
    with pytest.raises(RemapDataError, match="trunc.npz"):
        EmbeddingIndex.load(truncated)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.ones(3))
    with pytest.raises(RemapDataError, match="other.npz.*format marker"):
        EmbeddingIndex.load(other)
    with pytest.raises(RemapDataError, match="missing.npz"):
        EmbeddingIndex.load(tmp_path / "missing.npz")


def test_pca_of_a_line_is_a_line():
    t = np.linspace(-2.0, 3.0, 11)
    u = np.array([0.6, 0.8, 0.0, 0.0, 0.0])  # unit direction, largest component positive
    x = 0.3 + t[:, None] * u[None, :]
    xy = pca_2d(x)
    # Along the line the first axis is the (centred) position itself; the second axis is flat.
    assert np.allclose(xy[:, 0], t - t.mean()) and np.allclose(xy[:, 1], 0.0, atol=1e-12)
    assert np.allclose(pca_2d(x[::-1])[::-1], xy, atol=1e-12)  # row order does not flip the picture
    assert pca_2d(np.arange(4.0)[:, None]).shape == (4, 2)  # 1-D embeddings pad a flat axis


def test_embed_and_plot_projection():
    torch.manual_seed(0)
    cfg = ModelConfig(npix=32, stem_channels=4, stage_channels=(4,), kernel_size=3, embedding_dim=3,
                      head_bins={"teff": 4, "logg": 3, "feh": 5})
    model = DeepREMAP(cfg).eval()
    flux = np.random.default_rng(0).uniform(0.5, 1.5, (5, 32)).astype(np.float32)
    e = embed(model, flux, batch_size=2)
    assert e.shape == (5, 3) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    assert np.allclose(e, model(torch.as_tensor(flux))["embedding"].detach().numpy(), atol=1e-6)
    fig, axes = plt.subplots(1, 3)
    plot_projection(axes, pca_2d(e), LABELS[[0, 1, 2, 3, 0]], s=3)
    assert all(len(ax.collections) == 1 for ax in axes)
    plt.close(fig)
