"""The embedding space: embeddings, a nearest-neighbour index, a 2-D projection.

The triplet loss pulls spectra of similar stars together on the unit sphere, so the neighbours of
an observed spectrum among labelled ones (MILES stars, synthetic grid nodes) are a check on what the
network learned: a retrieval estimate (:func:`knn_label_estimate`) that agrees with the heads says the
embedding and the heads see the same physics.

Distances are Euclidean between unit vectors (chord length, in [0, 2]; ‖a − b‖² = 2 − 2 a·b), so
ranking by distance is ranking by cosine similarity and a single matrix product finds the candidates.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from remap_lib.constants import LABEL_NAMES
from remap_lib.evaluation.forward import forward
from remap_lib.fileio import RemapDataError, atomic_write, require_nonempty

FORMAT = "remap-embedding-index"
FORMAT_VERSION = 1


@torch.no_grad()
def embed(model, flux, mask=None, batch_size: int = 256, device="cpu") -> np.ndarray:
    """(n, d) float32 L2-normalized embeddings of spectra ``flux`` (n, npix)."""
    e = forward(model, flux, mask, batch_size, device)["embedding"].numpy()
    if not len(e):
        return e.astype(np.float32)
    return _unit(e.astype(np.float64), "embeddings").astype(np.float32)


def nearest_reference_distance(embedding, reference, chunk_size: int = 4096) -> np.ndarray:
    """Euclidean distance from each unit embedding (n, d) to the nearest of the unit ``reference`` rows (m, d).

    sqrt(2 − 2 max a·b), on ``reference``'s device when it is a tensor, ``chunk_size`` queries at a time.
    Why not scikit-learn: one matrix product in torch runs on the GPU that ``remap predict`` uses.
    """
    ref = torch.as_tensor(reference, dtype=torch.float32)
    e = torch.as_tensor(np.asarray(embedding, dtype=np.float32))
    best = [(e[i:i + chunk_size].to(ref.device) @ ref.T).max(dim=1).values.cpu() for i in range(0, len(e), chunk_size)]
    sim = torch.cat(best).clamp(max=1.0) if best else torch.zeros(0)
    return torch.sqrt(torch.clamp(2.0 - 2.0 * sim, min=0.0)).numpy()


def _unit(x, what: str) -> np.ndarray:
    """Rows scaled to unit length (model outputs already are; this absorbs float32 rounding)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{what} must be (n, d), got shape {x.shape}")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(~np.isfinite(norm) | (norm == 0)):
        raise ValueError(f"{what}: every row must be finite and non-zero to lie on the unit sphere")
    return x / norm


@dataclass
class Neighbours:
    """k nearest neighbours of m queries; each array is (m, k), ``labels`` (m, k, 3), nearest first.

    A slot with no candidate left (k larger than what exclusion leaves) has index −1, distance inf,
    NaN labels and empty id and source.
    """

    indices: np.ndarray
    distances: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    source: np.ndarray

    def table(self, i: int) -> list[dict]:
        """The neighbours of query ``i`` as rows (for printing or a DataFrame)."""
        return [{"rank": r, "index": int(self.indices[i, r]), "id": str(self.ids[i, r]),
                 "source": str(self.source[i, r]), "distance": float(self.distances[i, r]),
                 **{name: float(self.labels[i, r, j]) for j, name in enumerate(LABEL_NAMES)}}
                for r in range(self.indices.shape[1])]


class EmbeddingIndex:
    """Labelled unit vectors to search: ``embeddings`` (n, d), ``labels`` (n, 3), ``ids`` (n,), and
    ``source`` (one string, or one per row, e.g. "MILES" / "grid").

    Why not scikit-learn's ``NearestNeighbors``: exact cosine search is one matrix product either way,
    and it has no per-query self-exclusion, labels or pickle-free file; not worth a new dependency.
    """

    def __init__(self, embeddings, labels=None, ids=None, source="", chunk_size: int = 1024):
        self.embeddings = _unit(embeddings, "embeddings")
        n = len(self.embeddings)
        self.labels = (np.full((n, 3), np.nan) if labels is None else np.asarray(labels, dtype=np.float64))
        self.ids = np.asarray([str(i) for i in range(n)] if ids is None else ids).astype(str)
        self.source = np.broadcast_to(np.asarray(source, dtype=str), (n,)).copy()
        self.chunk_size = int(chunk_size)
        if self.labels.shape != (n, 3):
            raise ValueError(f"labels must be ({n}, 3), got {self.labels.shape}")
        if self.ids.shape != (n,):
            raise ValueError(f"ids must be ({n},), got {self.ids.shape}")

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def query(self, embeddings, k: int = 5, exclude_self_ids=None, chunk_size: int | None = None) -> Neighbours:
        """The ``k`` nearest rows to each query (m, d), nearest first.

        ``exclude_self_ids`` (m,): for query i, rows whose id equals ``exclude_self_ids[i]`` are not
        candidates (leave-one-out when the queries are in the index). Queries are processed
        ``chunk_size`` at a time so memory stays at chunk_size × n similarities.
        """
        q = _unit(embeddings, "query embeddings")
        if q.shape[1] != self.dim:
            raise ValueError(f"query dimension {q.shape[1]} != index dimension {self.dim}")
        n, m = len(self), len(q)
        if not 1 <= k <= n:
            raise ValueError(f"k must be in [1, {n}] for an index of {n} rows, got {k}")
        excl = None
        if exclude_self_ids is not None:
            excl = np.asarray(exclude_self_ids).astype(str)
            if excl.shape != (m,):
                raise ValueError(f"exclude_self_ids must be ({m},), got {excl.shape}")
            # Integer codes: comparing ints over a (chunk, n) block is much cheaper than strings.
            _, codes = np.unique(np.concatenate([self.ids, excl]), return_inverse=True)
            row_code, excl = codes[:n], codes[n:]
        step = max(1, int(chunk_size or self.chunk_size))
        idx = np.empty((m, k), dtype=np.int64)
        for s in range(0, m, step):
            sim = q[s:s + step] @ self.embeddings.T  # (c, n) cosine similarities
            if excl is not None:
                sim[excl[s:s + step, None] == row_code[None, :]] = -np.inf
            # argpartition finds the k best in O(n); only those k are then sorted.
            part = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(sim), 1))
            order = np.argsort(-np.take_along_axis(sim, part, axis=1), axis=1, kind="stable")
            top = np.take_along_axis(part, order, axis=1)
            top[~np.isfinite(np.take_along_axis(sim, top, axis=1))] = -1
            idx[s:s + step] = top
        valid = idx >= 0
        safe = np.where(valid, idx, 0)
        # Exact distances for the chosen few: sqrt(2 − 2 a·b) loses digits for near-identical vectors.
        dist = np.linalg.norm(q[:, None, :] - self.embeddings[safe], axis=2)
        return Neighbours(
            indices=idx,
            distances=np.where(valid, dist, np.inf),
            labels=np.where(valid[..., None], self.labels[safe], np.nan),
            ids=np.where(valid, self.ids[safe], ""),
            source=np.where(valid, self.source[safe], ""),
        )

    def merge(self, other: EmbeddingIndex) -> EmbeddingIndex:
        """One index holding this one's rows then ``other``'s (e.g. MILES and the synthetic grid)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge indexes of dimension {self.dim} and {other.dim}")
        return EmbeddingIndex(np.concatenate([self.embeddings, other.embeddings]),
                              np.concatenate([self.labels, other.labels]),
                              np.concatenate([self.ids, other.ids]),
                              np.concatenate([self.source, other.source]), self.chunk_size)

    def save(self, path) -> Path:
        """Write an .npz (no pickles) atomically: a crash leaves the old file or none."""
        path = Path(path)
        with atomic_write(path) as fh:
            np.savez(fh, format=np.array(FORMAT), format_version=np.array(FORMAT_VERSION),
                     embeddings=self.embeddings, labels=self.labels, ids=self.ids, source=self.source)
        return path

    @classmethod
    def load(cls, path) -> EmbeddingIndex:
        """Read a file written by :meth:`save`; errors name the file."""
        path = require_nonempty(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise RemapDataError(path, f"not a readable .npz embedding index ({err})") from err
        if str(data.get("format", "")) != FORMAT:
            raise RemapDataError(path, f"not a remap embedding index (no '{FORMAT}' format marker)")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise RemapDataError(path, f"index format {int(data['format_version'])} is newer than this "
                                 f"remap understands ({FORMAT_VERSION})")
        missing = [k for k in ("embeddings", "labels", "ids", "source") if k not in data]
        if missing:
            raise RemapDataError(path, f"missing arrays {missing}")
        try:
            return cls(data["embeddings"], data["labels"], data["ids"], data["source"])
        except ValueError as err:
            raise RemapDataError(path, str(err)) from err


def knn_label_estimate(index: EmbeddingIndex, embeddings, k: int = 5, exclude_self_ids=None) -> np.ndarray:
    """(m, 3) mean labels of each query's k nearest neighbours (NaN labels ignored)."""
    lab = index.query(embeddings, k, exclude_self_ids).labels
    known = np.isfinite(lab)
    count = known.sum(axis=1)
    # Written out rather than np.nanmean so that all-NaN neighbours give NaN without a warning.
    total = np.where(known, lab, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def pca_2d(embeddings) -> np.ndarray:
    """(n, 2) projection on the two leading principal axes (numpy SVD of the centred data).

    Sign convention (as scikit-learn's ``svd_flip``): each axis is flipped so that its largest
    absolute component is positive, so the picture does not flip between runs or machines.
    Why not scikit-learn's ``PCA``: the same one SVD, for one figure; not worth a new dependency.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (n, d), got {x.shape}")
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    vt = vt[:2]
    signs = np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])
    signs[signs == 0] = 1.0
    xy = x @ (vt * signs[:, None]).T
    if xy.shape[1] < 2:  # fewer than two axes (d == 1 or n == 1): pad with a flat second axis
        xy = np.concatenate([xy, np.zeros((len(x), 2 - xy.shape[1]))], axis=1)
    return xy


def plot_projection(axes, xy, labels, names=LABEL_NAMES, cmap: str = "viridis", **scatter_kw):
    """Three panels of the 2-D projection ``xy`` (n, 2), coloured by each label column."""
    from remap_lib.book.plots import LABEL_TEX

    labels = np.asarray(labels, dtype=np.float64)
    size = scatter_kw.pop("s", 6)
    for j, (ax, name) in enumerate(zip(np.ravel(axes), names, strict=False)):
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels[:, j], cmap=cmap, s=size, **scatter_kw)
        ax.figure.colorbar(sc, ax=ax, label=LABEL_TEX.get(name, name))
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    return axes
