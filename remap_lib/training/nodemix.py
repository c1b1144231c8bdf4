"""Spectra between the grid's nodes: flux interpolation between neighbouring nodes (issue 12's off-lattice labels).

A synthetic grid holds spectra at lattice labels only (250 K, 0.5 dex, 0.25 dex apart in the MARCS
box), so a network pretrained on it sees no label between two nodes, and its soft targets occupy only
the bins at node values. Stars are not on the lattice, nor are the grid's own held-out nodes as seen
from the training nodes around them. With ``node_mix`` (:class:`~remap_lib.training.config.TrainConfig`),
each training row of a batch is replaced, with that probability, by

    flux = λ·flux_a + (1 − λ)·flux_b,  labels = λ·labels_a + (1 − λ)·labels_b,  λ ~ U(0, 1),

where b is a random lattice neighbour of a (one step or none in every label, not a itself): the linear
interpolation between adjacent nodes that grid interpolators use, and the soft targets follow the
interpolated labels. A row without a lattice neighbour is left as it is. Augmentation then acts on the
mixture as on any spectrum.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

#: Most distinct values a label may take for the training rows to count as a lattice (the MARCS FGK grid:
#: 15 Teff, 10 log g, 13 [M/H]); observed stars' labels, distinct for almost every star, are not one.
MAX_LATTICE_LEVELS = 64


class Lattice:
    """Labels as lattice indices: each label's sorted distinct values, each row's index in them, and the row at
    each index. Steps are counted in those values, so uneven spacings (MARCS's 100 K steps below 4000 K) are
    steps too. Shared by node mixing and the grid's Cramér–Rao bounds (:mod:`remap_lib.evaluation.nodebound`).

    Raises ``ValueError`` when the labels are not a lattice (non-finite, or too many distinct values).
    """

    def __init__(self, labels):
        labels = np.asarray(labels, dtype=np.float64)
        if labels.ndim != 2 or not np.isfinite(labels).all():
            raise ValueError("a grid lattice needs finite labels for every row (a synthetic grid)")
        self.index = np.empty(labels.shape, dtype=np.int64)
        self.levels = []
        for j in range(labels.shape[1]):
            levels, self.index[:, j] = np.unique(labels[:, j], return_inverse=True)
            if len(levels) > MAX_LATTICE_LEVELS:
                raise ValueError(f"node mixing needs labels on a grid lattice; label {j} takes {len(levels)} "
                                 f"distinct values (at most {MAX_LATTICE_LEVELS}): these look like observed stars")
            self.levels.append(levels)
        self.row_at: dict[tuple, int] = {}
        for row, key in enumerate(map(tuple, self.index)):
            self.row_at.setdefault(key, row)  # a node listed twice counts once

    def at(self, row: int, offset) -> int | None:
        """The row ``offset`` (steps per label) away from ``row``, if the lattice holds it."""
        return self.row_at.get(tuple(int(i) + int(d) for i, d in zip(self.index[row], offset, strict=True)))


def lattice_neighbours(labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's lattice neighbours: rows whose labels are at most one lattice step away in every label
    (:class:`Lattice`). Returns ``table`` (n, k) of neighbour rows, padded with -1, and ``counts`` (n,)."""
    lattice = Lattice(labels)
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=lattice.index.shape[1]) if any(o)]
    found = [[k for o in offsets if (k := lattice.at(row, o)) is not None] for row in range(len(lattice.index))]
    counts = torch.tensor([len(f) for f in found], dtype=torch.long)
    table = torch.full((len(found), max((len(f) for f in found), default=0) or 1), -1, dtype=torch.long)
    for row, f in enumerate(found):
        table[row, :len(f)] = torch.tensor(f, dtype=torch.long)
    return table, counts


def mix_with_neighbours(flux, ivar, mask, labels, rows, table, counts, share: float,
                        generator: torch.Generator):
    """The batch of ``rows`` drawn from the pools ``flux``, ``ivar``, ``mask`` and ``labels`` (all training
    rows; ``table`` and ``counts`` from :func:`lattice_neighbours` cover the first ``len(table)`` of them),
    with a ``share`` of the lattice rows replaced by interpolations with a neighbour.

    Returns the batch's flux, ivar, mask and labels. A mixed row's inverse variance is that of the
    weighted sum; a pixel masked in either node is masked. Rows past the table (rehearsal, distillation)
    and rows without neighbours stay as they are. Draws come from ``generator`` only (reproducible).
    """
    rows = torch.as_tensor(rows, dtype=torch.long)
    out = [flux[rows].clone(), ivar[rows].clone(), mask[rows].clone(), labels[rows].clone()]
    n = len(rows)
    pick, lam, slot = (torch.rand(n, generator=generator) for _ in range(3))
    on_lattice = rows < len(table)
    safe = torch.where(on_lattice, rows, torch.zeros_like(rows))
    nb_count = torch.where(on_lattice, counts[safe], torch.zeros_like(rows))
    mixed = (pick < share) & (nb_count > 0)
    if not mixed.any():
        return tuple(out)
    i = torch.nonzero(mixed).squeeze(1)
    a = rows[i]
    b = table[a, torch.clamp((slot[i] * nb_count[i]).long(), max=table.shape[1] - 1)]
    w = lam[i]
    out[0][i] = w[:, None] * flux[a] + (1 - w[:, None]) * flux[b]
    # 1/ivar of a noise-free node (ivar = inf) is 0: it adds no variance; a masked pixel's ivar stays 0
    var = w[:, None] ** 2 / ivar[a] + (1 - w[:, None]) ** 2 / ivar[b]
    out[2][i] = mask[a] | mask[b]
    out[1][i] = torch.where(out[2][i] | ~torch.isfinite(var), torch.zeros_like(var), 1.0 / var)
    out[3][i] = w[:, None] * labels[a] + (1 - w[:, None]) * labels[b]
    return tuple(out)
