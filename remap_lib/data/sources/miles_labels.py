"""The MILES label catalogue: the two label files of the DAP's copy, parsed, checked and merged.

``paramsMILES_v9.1.txt`` is the MILES catalogue (fixed width: Name, MILES id, CaT id, SpT, Teff,
log g, [Fe/H], Refs, Libraries; ``--`` for a missing value); ``MILES_params.db`` is the DAP's
pared-down copy (id, Teff, log g, [Fe/H]; 99999 and 9999 for missing values). Values come from the
catalogue; every disagreement with the copy is warned about (:class:`MilesLabelWarning`) and kept in
:attr:`MilesLabelTable.notes`. A malformed id is repaired only through :data:`ID_ERRATA`. A bad
line raises :class:`~remap_lib.fileio.RemapDataError` naming the file and the line.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from remap_lib.fileio import RemapDataError, require_nonempty

__all__ = ["ID_ERRATA", "PARAMS_DB", "PARAMS_TXT", "MilesLabelTable", "MilesLabelWarning", "merge_labels",
           "read_miles_labels", "read_params_db", "read_params_txt"]

PARAMS_DB = "MILES_params.db"
PARAMS_TXT = "paramsMILES_v9.1.txt"
#: Malformed MILES ids found in the label files and the id they stand for, with the reason.
ID_ERRATA: dict[str, tuple[int, str]] = {
    "022.": (221, "HD044691A is listed as '022.'; id 0022 is HD003567, 0221 is otherwise "
                  "missing and spectrum m0221 is an A star like HD044691A (7950 K)"),
}

_MISSING_TOKENS = {"", "-", "--", "---", "nan", "NaN", "NAN", "..."}
_TEFF_SENTINEL = 99999.0  # |Teff| >= this is missing
_OTHER_SENTINEL = 9999.0  # |log g|, |[Fe/H]| >= this is missing
_LABEL_COLUMNS = ("teff", "logg", "feh")
# header words of paramsMILES_v9.1.txt and the column each starts
_TXT_HEADER = (("Name", "name"), ("MILES", "id"), ("CaT", "cat"), ("SpT", "sptype"),
               ("Teff", "teff"), ("log g", "logg"), ("[Fe/H]", "feh"), ("Refs", "refs"),
               ("Libraries", "libraries"))


class MilesLabelWarning(UserWarning):
    """The two MILES label files disagree, or a spectrum has no label row."""


def _parse_id(token: str, source, lineno: int, notes: list[str]) -> int:
    token = token.strip()
    if token.isdigit():
        return int(token)
    if token in ID_ERRATA:
        fixed, why = ID_ERRATA[token]
        notes.append(f"{Path(source).name} line {lineno}: MILES id {token!r} read as {fixed:04d} ({why})")
        return fixed
    raise RemapDataError(source, f"line {lineno}: MILES id {token!r} is not an integer")


def _parse_label(token: str, sentinel: float, source, lineno: int, what: str) -> float:
    token = token.strip()
    if token in _MISSING_TOKENS:
        return np.nan
    try:
        value = float(token)
    except ValueError:
        raise RemapDataError(source, f"line {lineno}: {what} {token!r} is not a number") from None
    if not np.isfinite(value) or abs(value) >= sentinel:
        return np.nan
    return value


def _sentinel(column: str) -> float:
    return _TEFF_SENTINEL if column == "teff" else _OTHER_SENTINEL


def _check_unique(ids, source) -> None:
    ids = np.asarray(ids)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = ", ".join(f"{i:04d}" for i in uniq[counts > 1])
        raise RemapDataError(source, f"MILES id(s) listed more than once: {dup}")


def read_params_db(path, notes: list[str] | None = None) -> pd.DataFrame:
    """Read ``MILES_params.db``: columns id, teff, logg, feh (NaN where missing).

    Comment lines start with ``#``; 99999 (Teff) and 9999 (log g, [Fe/H]) mean missing.
    Malformed ids listed in :data:`ID_ERRATA` are repaired and noted in ``notes``.
    """
    path = require_nonempty(path)
    notes = [] if notes is None else notes
    rows = []
    with open(path, encoding="ascii", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 4:
                raise RemapDataError(path, f"line {lineno}: expected 4 columns (id Teff logg [Fe/H]), "
                                     f"got {len(parts)}: {line.rstrip()!r}")
            row = {"id": _parse_id(parts[0], path, lineno, notes)}
            for col, tok in zip(_LABEL_COLUMNS, parts[1:], strict=True):
                row[col] = _parse_label(tok, _sentinel(col), path, lineno, col)
            rows.append(row)
    if not rows:
        raise RemapDataError(path, "no data rows")
    frame = pd.DataFrame(rows, columns=["id", *_LABEL_COLUMNS])
    _check_unique(frame["id"], path)
    return frame


def _txt_columns(header: str, path) -> list[tuple[str, int, int | None]]:
    """(column, start, stop) slices from the header line of ``paramsMILES_v9.1.txt``."""
    starts = []
    pos = 0
    for word, col in _TXT_HEADER:
        at = header.find(word, pos)
        if at < 0:
            raise RemapDataError(path, f"header line has no column {word!r}: {header.rstrip()!r}")
        starts.append((col, at))
        pos = at + len(word)
    return [(col, start, starts[k + 1][1] if k + 1 < len(starts) else None)
            for k, (col, start) in enumerate(starts)]


def read_params_txt(path, notes: list[str] | None = None) -> pd.DataFrame:
    """Read the fixed-width MILES catalogue ``paramsMILES_v9.1.txt``.

    Columns: id, name, cluster (bool: the ``Cl`` flag after the name of globular/open cluster
    members), cat (CaT library id, '' if none), sptype, teff, logg, feh (NaN for ``--`` or a
    sentinel), refs (reference codes as printed, '' if missing) and libraries (the flag letters,
    e.g. 'LJIE'). Column edges come from the header line; a row whose field spills over a
    column edge is an error, as is a malformed id not listed in :data:`ID_ERRATA`.
    """
    path = require_nonempty(path)
    notes = [] if notes is None else notes
    with open(path, encoding="ascii", errors="replace") as fh:
        lines = fh.read().splitlines()
    header_at = next((k for k, line in enumerate(lines) if line.startswith("Name")), None)
    if header_at is None:
        raise RemapDataError(path, "no header line starting with 'Name'")
    columns = _txt_columns(lines[header_at], path)
    rows = []
    for lineno, line in enumerate(lines[header_at + 1:], header_at + 2):
        stripped = line.strip()
        # the unit line ('s????') and the dashed rule under the header are not data
        if not stripped or stripped.startswith("- -") or stripped == "s????" or line.startswith("#"):
            continue
        fields = {}
        for col, start, stop in columns:
            if start > 0 and len(line) > start and line[start - 1] != " " and line[start] != " ":
                raise RemapDataError(path, f"line {lineno}: a field runs across the start of column "
                                     f"{col!r} (char {start}): {line.rstrip()!r}")
            fields[col] = line[start:stop] if stop is not None else line[start:]
        name_field = fields["name"].rstrip()
        cluster = name_field.endswith(" Cl")
        row = {
            "id": _parse_id(fields["id"], path, lineno, notes),
            "name": name_field[:-3].strip() if cluster else name_field.strip(),
            "cluster": cluster,
            "cat": fields["cat"].strip(),
            "sptype": fields["sptype"].strip(),
        }
        for col in _LABEL_COLUMNS:
            row[col] = _parse_label(fields[col], _sentinel(col), path, lineno, col)
        refs = fields["refs"].strip()
        row["refs"] = "" if refs in _MISSING_TOKENS else refs
        row["libraries"] = "".join(fields["libraries"].split())
        if not row["name"]:
            raise RemapDataError(path, f"line {lineno}: empty star name: {line.rstrip()!r}")
        rows.append(row)
    if not rows:
        raise RemapDataError(path, "no data rows")
    frame = pd.DataFrame(rows, columns=["id", "name", "cluster", "cat", "sptype", *_LABEL_COLUMNS,
                                        "refs", "libraries"])
    _check_unique(frame["id"], path)
    return frame


@dataclass(frozen=True)
class MilesLabelTable:
    """Merged MILES labels (one row per MILES id) and what happened while merging."""

    table: pd.DataFrame  # id, name, cluster, cat, sptype, teff, logg, feh, refs, libraries
    notes: tuple[str, ...]  # repaired ids (ID_ERRATA) and every disagreement between the files
    disagreements: tuple[str, ...]  # the subset of notes that are disagreements

    def __len__(self) -> int:
        return len(self.table)


def merge_labels(txt: pd.DataFrame, db: pd.DataFrame, txt_name: str = PARAMS_TXT,
                 db_name: str = PARAMS_DB) -> tuple[pd.DataFrame, list[str]]:
    """Outer-merge the catalogue and the DAP table by id; values from the catalogue.

    Returns the merged frame (sorted by id) and a list of disagreements: ids in only one
    file, and label values that differ (NaN equals NaN). For an id only in ``db`` the labels
    come from ``db`` and the text columns are empty.
    """
    merged = txt.merge(db, on="id", how="outer", suffixes=("", "_db"), indicator=True)
    problems: list[str] = []
    for _, row in merged[merged["_merge"] == "left_only"].iterrows():
        problems.append(f"id {int(row['id']):04d} ({row['name']}) is in {txt_name} but not in {db_name}")
    for _, row in merged[merged["_merge"] == "right_only"].iterrows():
        problems.append(f"id {int(row['id']):04d} is in {db_name} but not in {txt_name}")
    only_db = merged["_merge"] == "right_only"
    both = (merged["_merge"] == "both").to_numpy()
    for col in _LABEL_COLUMNS:
        a, b = merged[col].to_numpy(dtype=float), merged[f"{col}_db"].to_numpy(dtype=float)
        same = (np.isnan(a) & np.isnan(b)) | (np.abs(a - b) < 1e-6)
        for k in np.flatnonzero(both & ~same):
            problems.append(f"id {int(merged['id'].iat[k]):04d} ({merged['name'].iat[k]}): {col} = {a[k]} "
                            f"in {txt_name} but {b[k]} in {db_name}")
        merged.loc[only_db, col] = merged.loc[only_db, f"{col}_db"]
    for col, empty in (("name", ""), ("cat", ""), ("sptype", ""), ("refs", ""), ("libraries", "")):
        merged[col] = merged[col].fillna(empty).astype(str)
    merged["cluster"] = merged["cluster"].eq(True)
    merged = merged.drop(columns=[f"{c}_db" for c in _LABEL_COLUMNS] + ["_merge"])
    merged = merged.sort_values("id", kind="stable").reset_index(drop=True)
    merged["id"] = merged["id"].astype(int)
    return merged, problems


def read_miles_labels(folder, warn: bool = True) -> MilesLabelTable:
    """Read and merge both label files in ``folder``; warn about every disagreement."""
    folder = Path(folder)
    notes: list[str] = []
    txt = read_params_txt(folder / PARAMS_TXT, notes)
    db = read_params_db(folder / PARAMS_DB, notes)
    merged, problems = merge_labels(txt, db)
    if problems and warn:
        shown = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
        warnings.warn(f"{folder}: {len(problems)} disagreement(s) between {PARAMS_TXT} and {PARAMS_DB} "
                      f"(values taken from {PARAMS_TXT}):\n  {shown}", MilesLabelWarning, stacklevel=2)
    return MilesLabelTable(merged, tuple(notes + problems), tuple(problems))
