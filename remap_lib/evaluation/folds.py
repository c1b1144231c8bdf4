"""Cross-validation folds over the MILES FGK dwarfs, each with its own inner temperature set.

Every FGK dwarf with all three labels (roles ``finetune``, ``validation`` and ``calibration`` of the
committed splits: 355 stars) gets one of K folds. Rule (deterministic from ``seed``): sort the
dwarfs by (Teff, id), cut them into consecutive groups of K, and give each group a random
permutation of the fold numbers (``numpy.random.default_rng(seed)``; the last, smaller group takes
the first fold numbers of its permutation). Every fold thus spans the whole Teff range, and fold
sizes differ by at most one.

When fold k is held out, the other folds are its training stars; a Teff-stratified
``inner_fraction`` of them (consecutive Teff groups, one star drawn from each with
``default_rng(seed + 1 + k)``, as :mod:`remap_lib.data.splits` draws its validation stars) is set aside
for temperature scaling and interval calibration, and the rest are fine-tuned on. So no star is
predicted by a model, or calibrated by temperatures, that saw it.

The study writes the table beside its records (``results/study/folds.csv``) with columns ``id``,
``teff``, ``role`` (in the splits), ``fold`` and one column ``fold<k>`` per fold whose value says what
the star is when fold k is held out: ``test``, ``finetune`` or ``temperature``.

Rows that learn from the giant candidates' spectra (without their labels) can hold giants out too:
:func:`giant_folds` deals them into K folds by id.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from remap_lib.fileio import RemapDataError, atomic_write, require_nonempty

#: Roles of the committed splits whose stars are cross-validated: every FGK dwarf with all labels.
DWARF_ROLES = ("finetune", "validation", "calibration")
USES = ("test", "finetune", "temperature")


def _teff_order(teff: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.lexsort((np.asarray(ids, dtype=str), np.asarray(teff, dtype=float)))


def make_folds(splits: pd.DataFrame, k: int = 5, seed: int = 0, inner_fraction: float = 0.15) -> pd.DataFrame:
    """The fold table of the dwarfs in ``splits`` (see the module docstring for the rule)."""
    if k < 2:
        raise ValueError("cross-validation needs k >= 2 folds")
    if not 0 < inner_fraction < 1:
        raise ValueError("inner_fraction must be in (0, 1)")
    dwarfs = splits[splits["role"].isin(DWARF_ROLES)].reset_index(drop=True)
    if len(dwarfs) < 2 * k:
        raise ValueError(f"{len(dwarfs)} dwarfs cannot fill {k} folds")
    order = _teff_order(dwarfs["teff"].to_numpy(), dwarfs["id"].to_numpy())
    rng = np.random.default_rng(seed)
    fold = np.empty(len(dwarfs), dtype=int)
    for start in range(0, len(order), k):
        group = order[start:start + k]
        fold[group] = rng.permutation(k)[:len(group)]
    table = pd.DataFrame({"id": dwarfs["id"], "teff": dwarfs["teff"].astype(float), "role": dwarfs["role"],
                          "fold": fold})
    teff, ids = table["teff"].to_numpy(), table["id"].to_numpy()
    for f in range(k):
        use = np.where(fold == f, "test", "finetune").astype(object)
        train = np.flatnonzero(fold != f)
        n_inner = max(1, round(inner_fraction * len(train)))
        groups = np.array_split(train[_teff_order(teff[train], ids[train])], n_inner)
        inner_rng = np.random.default_rng(seed + 1 + f)
        use[[int(g[inner_rng.integers(len(g))]) for g in groups]] = "temperature"
        table[f"fold{f}"] = use
    return table.sort_values("id", kind="stable").reset_index(drop=True)


def giant_folds(ids, k: int, seed: int = 0) -> dict[str, int]:
    """One of ``k`` folds for each giant candidate, by id alone (their labels are never read).

    For rows that learn from the giants' spectra without labels: fold k's network learns from the
    other folds' giants and is scored on fold k's, so no giant is scored by a network that saw its
    spectrum. Rule: sort the ids, permute them with ``default_rng(seed)``, deal the folds out in turn
    (sizes differ by at most one).
    """
    ordered = sorted(str(i) for i in ids)
    if len(ordered) < k:
        raise ValueError(f"{len(ordered)} giants cannot fill {k} folds")
    perm = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[j]: int(n % k) for n, j in enumerate(perm)}


def n_folds(table: pd.DataFrame) -> int:
    return int(table["fold"].max()) + 1


def fold_ids(table: pd.DataFrame, fold: int, use: str) -> list[str]:
    """Ids of the stars with ``use`` ('test', 'finetune' or 'temperature') when ``fold`` is held out."""
    if use not in USES:
        raise ValueError(f"use must be one of {USES}")
    return table.loc[table[f"fold{fold}"] == use, "id"].tolist()


def write_folds(table: pd.DataFrame, path, seed: int | None = None, note: str = "") -> Path:
    """Write the table atomically as CSV under a ``#`` header with the rule, seed and counts."""
    counts = table["fold"].value_counts().sort_index()
    header = ["# remap study: cross-validation folds of the MILES FGK dwarfs (see remap_lib/evaluation/folds.py)",
              f"# seed: {seed if seed is not None else 'unknown'}; folds: {n_folds(table)}; stars per fold: "
              + ", ".join(str(int(c)) for c in counts)]
    if note:
        header.append(f"# note: {note}")
    with atomic_write(path, "w") as fh:
        fh.write("\n".join(header) + "\n" + table.to_csv(index=False, float_format="%.10g", lineterminator="\n"))
    return Path(path)


def read_folds(path) -> pd.DataFrame:
    """Read a table written by :func:`write_folds`, checking that every fold column is consistent."""
    path = require_nonempty(path)
    with open(path, encoding="utf-8") as fh:
        text = "".join(line for line in fh if not line.startswith("#"))
    table = pd.read_csv(io.StringIO(text), dtype={"id": str, "role": str})
    if not {"id", "teff", "fold"} <= set(table.columns):
        raise RemapDataError(path, "not a fold table (needs id, teff, fold and fold<k> columns)")
    k = n_folds(table)
    for f in range(k):
        col = table.get(f"fold{f}")
        if col is None:
            raise RemapDataError(path, f"missing column fold{f}")
        if not set(col) <= set(USES) or not ((col == "test") == (table["fold"] == f)).all():
            raise RemapDataError(path, f"column fold{f} disagrees with the fold column or holds unknown uses")
    return table
