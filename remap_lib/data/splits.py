"""The MILES splits every model and baseline uses: fine-tuning, validation, calibration, giants.

One row per MILES star, one ``role`` each:

``finetune``
    FGK dwarfs the networks (and The Cannon) are trained on.
``validation``
    FGK dwarfs kept out of training for early stopping, SWA and temperature scaling.
``calibration``
    The 30 calibration dwarfs (the paper's validation protocol), chosen by label quality; never trained on.
``giant_candidate``
    FGK giants: never used in fine-tuning, validation or calibration.
``holdout``
    Stars the user withheld (``holdout_ids`` / a holdout file); excluded from every other role.
``other``
    Everything else (no full label set, or outside the FGK box).

Selection
---------
FGK dwarf: Teff, log g and [Fe/H] all known, 4000 <= Teff <= 7000 K and log g >= 3.5.
FGK giant: all labels known, 4000 <= Teff <= 7000 K and log g < 3.5.
(:meth:`MilesLibrary.fgk_dwarfs` / :meth:`MilesLibrary.fgk_giants` with their defaults.)

Calibration rule (deterministic, no random numbers)
---------------------------------------------------
C1. Candidates are the FGK dwarfs that

    * have ``Refs == "111"`` in ``paramsMILES_v9.1.txt``: the three digits give the source of
      Teff, log g and [Fe/H] in the scheme of Cenarro et al. (2007, MNRAS 374, 664), and we read
      code ``1`` as their first-priority source, a high-resolution spectroscopic determination;
      all three labels must come from it (``SKC`` = Soubiran, Katz & Cayrel 1998, codes 2/3/6,
      mixed codes and the one-digit cluster codes are not candidates);
    * are not cluster members (no ``Cl`` flag);
    * have a spectral type that does not contradict a dwarf: when SpT is given, its first
      spectral-class letter (after an optional ``sd``) is F, G or K, it carries no giant
      luminosity class (``I``, ``Ia``, ``Iab``, ``Ib``, ``II``, ``III``; ``IV``, ``V``, ``VI``
      are fine) and no ``+`` (composite spectrum).

C2. Sort all candidates (held-out ones included, so that holding a star out never moves the
    others) by (Teff, MILES id) and cut them into ``n_calibration`` consecutive groups with
    ``numpy.array_split`` (the first ``n_candidates % n_calibration`` groups are one star larger).
C3. Group ``g`` (0-based) aims at a [Fe/H] target that cycles through the candidates' extremes
    and middle: ``numpy.percentile(feh_candidates, 100 * q_g)`` with ``q_g = (0, 1/2, 1)[g % 3]``,
    i.e. the lowest [Fe/H] of all candidates, their median, their highest. The group's
    calibration star is its non-held-out member with the smallest |[Fe/H] - target| (so: the
    group's most metal-poor member, the member nearest the median, the most metal-rich member);
    ties go to the higher S/N, then the lower id. A held-out star is thus replaced by the next
    star of its group by the same criterion.
C4. If every member of a group is held out, the star taken instead is the unpicked, non-held-out
    candidate whose Teff is nearest the group's median Teff (ties: lower id).

S/N is the DER_SNR estimate (Stoehr et al. 2008; :func:`remap_lib.training.trainsets.der_snr_noise`) on the
native MILES pixels in 5000-5700 Å: median flux / DER_SNR sigma. It is only a tie-breaker: DER_SNR
counts line structure as noise, so it ranks metal-rich and cool stars low.

On the real library (MILES v9.1, 984 spectra shipped) C1 leaves 93 candidates with
4541 <= Teff <= 6392 K; no dwarf cooler or hotter has all three labels from code ``1``, so the
calibration set spans that range.

Validation and fine-tuning
--------------------------
The FGK dwarfs that are neither calibration nor held out are sorted by (Teff, id) and cut into
``n_val = round(val_fraction * n)`` consecutive groups (``numpy.array_split``); one star per group,
drawn in group order with ``numpy.random.default_rng(seed).integers(len(group))``, goes to
validation (a Teff-stratified draw of exactly ``n_val`` stars). The rest are ``finetune``.

The committed table is ``data/splits/miles_splits.csv`` (:data:`DEFAULT_SPLITS`); regenerate it with
``python -m remap_lib.data.splits`` (see :func:`main`).
"""

from __future__ import annotations

import argparse
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from remap_lib.constants import FGK_TEFF, GIANT_LOGG
from remap_lib.fileio import RemapDataError, atomic_write, require_nonempty
from remap_lib.paths import DATA_DIR, repo_file

__all__ = [
    "CALIBRATION_REFS",
    "DEFAULT_SPLITS",
    "ROLES",
    "calibration_candidates",
    "main",
    "make_splits",
    "normalize_id",
    "read_holdout_file",
    "read_splits",
    "snr_estimate",
    "write_splits",
]

DEFAULT_SPLITS = DATA_DIR / "splits" / "miles_splits.csv"
ROLES = ("calibration", "validation", "finetune", "giant_candidate", "holdout", "other")
COLUMNS = ("id", "name", "teff", "logg", "feh", "refs", "sptype", "cluster", "snr", "role")
CALIBRATION_REFS = "111"
TEFF_RANGE = FGK_TEFF
LOGG_SPLIT = GIANT_LOGG
SNR_WINDOW = (5000.0, 5700.0)
FEH_QUANTILES = (0.0, 0.5, 1.0)
RULE = ("calibration: FGK dwarfs with Refs == '111', no cluster flag, SpT (if any) F/G/K without "
        "giant luminosity class or '+'; sorted by (Teff, id), split into n_calibration groups "
        "(numpy.array_split); group g takes the non-held-out member nearest the q_g quantile of "
        "candidate [Fe/H], q_g = (0, 1/2, 1)[g % 3], ties by higher S/N then lower id. "
        "validation: round(val_fraction * n) Teff-sorted groups of the remaining dwarfs, one star "
        "each drawn with numpy.random.default_rng(seed). See remap_lib/data/splits.py.")

_ID_RE = re.compile(r"^m?(\d{1,4})$", re.IGNORECASE)
_GIANT_CLASS = re.compile(r"(?<![IV])(?:Iab|Ia|Ib|III|II|I)(?![IV])")
_SPECTRAL_CLASS = re.compile(r"[OBAFGKM]")


# --------------------------------------------------------------------------------------------
# ids and holdout files
# --------------------------------------------------------------------------------------------

def normalize_id(value) -> str:
    """``'m0123'``, ``'0123'``, ``'123'``, ``123`` -> ``'m0123'``; ValueError for anything else."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        number = int(value)
    else:
        m = _ID_RE.match(str(value).strip())
        if not m:
            raise ValueError(f"not a MILES id: {value!r}")
        number = int(m.group(1))
    if not 0 < number < 10000:
        raise ValueError(f"not a MILES id: {value!r}")
    return f"m{number:04d}"


def read_holdout_file(path, known_ids=None) -> list[str]:
    """MILES ids from a holdout file: one per line, ``#`` starts a comment, blank lines ignored.

    Returns normalized ids (``'mNNNN'``) in file order without duplicates. A malformed token, or
    (when ``known_ids`` is given) an id not among them, raises :class:`RemapDataError` naming the
    file and every offending id.
    """
    path = require_nonempty(path)
    ids: list[str] = []
    bad: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            token = line.split("#", 1)[0].strip()
            if not token:
                continue
            try:
                norm = normalize_id(token)
            except ValueError:
                bad.append(f"{token!r} (line {lineno})")
                continue
            if norm not in ids:
                ids.append(norm)
    if bad:
        raise RemapDataError(path, f"not MILES ids: {', '.join(bad)}")
    if known_ids is not None:
        _check_known(ids, known_ids, path)
    return ids


def _check_known(ids, known_ids, source) -> None:
    known = {normalize_id(k) for k in known_ids}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise RemapDataError(source, f"holdout id(s) not in the MILES library: {', '.join(unknown)}")


def _holdout_set(holdout_ids, holdout_file, known_ids) -> set[str]:
    chosen: list[str] = []
    if holdout_file is not None:
        chosen += read_holdout_file(holdout_file, known_ids)
    if holdout_ids is not None:
        if isinstance(holdout_ids, (str, int, np.integer)):
            holdout_ids = [holdout_ids]
        bad, norm = [], []
        for value in holdout_ids:
            try:
                norm.append(normalize_id(value))
            except ValueError:
                bad.append(repr(value))
        if bad:
            raise RemapDataError("holdout_ids", f"not MILES ids: {', '.join(bad)}")
        _check_known(norm, known_ids, "holdout_ids")
        chosen += norm
    return set(chosen)


# --------------------------------------------------------------------------------------------
# the rule
# --------------------------------------------------------------------------------------------

def snr_estimate(wave, flux, window=SNR_WINDOW) -> np.ndarray:
    """Median flux / DER_SNR sigma of each spectrum over ``window`` (Å)."""
    from remap_lib.training.trainsets import der_snr_noise

    wave = np.asarray(wave, dtype=float)
    sel = (wave >= window[0]) & (wave <= window[1])
    if sel.sum() < 10:
        raise RemapDataError("snr_estimate", f"fewer than 10 pixels in {window[0]}-{window[1]} Å")
    f = np.atleast_2d(np.asarray(flux, dtype=np.float64))[:, sel]
    sigma = der_snr_noise(f)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sigma > 0, np.median(f, axis=1) / sigma, np.inf)


def _sptype_ok(sptype: str) -> bool:
    sp = str(sptype).strip()
    if not sp:
        return True
    if "+" in sp:
        return False
    body = sp[2:] if sp.lower().startswith("sd") else sp
    letter = _SPECTRAL_CLASS.search(body)
    if letter is None or letter.group(0) not in "FGK":
        return False
    return _GIANT_CLASS.search(body) is None


def calibration_candidates(table: pd.DataFrame) -> np.ndarray:
    """Mask of rule C1 over a splits-like table (columns role-independent: refs, cluster, sptype)."""
    dwarf = _dwarf_mask(table)
    refs = table["refs"].astype(str).str.strip().to_numpy() == CALIBRATION_REFS
    cluster = table["cluster"].to_numpy(dtype=bool)
    sptype = np.array([_sptype_ok(s) for s in table["sptype"]], dtype=bool)
    return dwarf & refs & ~cluster & sptype


def _all_labels(table) -> np.ndarray:
    return np.isfinite(table[["teff", "logg", "feh"]].to_numpy(dtype=float)).all(axis=1)


def _dwarf_mask(table) -> np.ndarray:
    teff, logg = table["teff"].to_numpy(dtype=float), table["logg"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return _all_labels(table) & (teff >= TEFF_RANGE[0]) & (teff <= TEFF_RANGE[1]) & (logg >= LOGG_SPLIT)


def _giant_mask(table) -> np.ndarray:
    teff, logg = table["teff"].to_numpy(dtype=float), table["logg"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return _all_labels(table) & (teff >= TEFF_RANGE[0]) & (teff <= TEFF_RANGE[1]) & (logg < LOGG_SPLIT)


def _pick_calibration(table: pd.DataFrame, held: np.ndarray, n_calibration: int) -> list[int]:
    """Row indices of the calibration stars (rules C2-C4)."""
    cand = np.flatnonzero(calibration_candidates(table))
    if len(cand) - int(held[cand].sum()) < n_calibration:
        raise RemapDataError("make_splits", f"only {len(cand) - int(held[cand].sum())} calibration "
                             f"candidates (rule C1) are not held out; {n_calibration} needed")
    teff = table["teff"].to_numpy(dtype=float)
    feh = table["feh"].to_numpy(dtype=float)
    snr = table["snr"].to_numpy(dtype=float)
    num = np.array([int(s[1:]) for s in table["id"]])
    order = cand[np.lexsort((num[cand], teff[cand]))]
    groups = np.array_split(order, n_calibration)
    targets = [float(np.percentile(feh[cand], 100.0 * FEH_QUANTILES[g % 3])) for g in range(n_calibration)]
    picked: list[int] = []
    empty: list[int] = []
    for g, members in enumerate(groups):
        free = [int(r) for r in members if not held[r]]
        if not free:
            empty.append(g)
            continue
        free.sort(key=lambda r, t=targets[g]: (abs(feh[r] - t), -snr[r], num[r]))
        picked.append(free[0])
    for g in empty:  # C4
        centre = float(np.median(teff[groups[g]]))
        free = [int(r) for r in cand if not held[r] and int(r) not in picked]
        free.sort(key=lambda r: (abs(teff[r] - centre), num[r]))
        picked.append(free[0])
    return sorted(picked)


def _pick_validation(table: pd.DataFrame, rows: np.ndarray, val_fraction: float, seed: int) -> list[int]:
    n_val = round(val_fraction * len(rows))
    if n_val == 0:
        return []
    teff = table["teff"].to_numpy(dtype=float)
    num = np.array([int(s[1:]) for s in table["id"]])
    order = rows[np.lexsort((num[rows], teff[rows]))]
    rng = np.random.default_rng(seed)
    return sorted(int(group[rng.integers(len(group))]) for group in np.array_split(order, n_val))


def _library_table(library) -> pd.DataFrame:
    n = len(library.ids)
    return pd.DataFrame({
        "id": [normalize_id(int(i)) for i in library.ids],
        "name": np.asarray(library.names, dtype=object).astype(str),
        "teff": np.asarray(library.teff, dtype=float),
        "logg": np.asarray(library.logg, dtype=float),
        "feh": np.asarray(library.feh, dtype=float),
        "refs": np.asarray(library.refs, dtype=object).astype(str),
        "sptype": np.asarray(library.sptype, dtype=object).astype(str),
        "cluster": (np.asarray(library.cluster, dtype=bool) if library.cluster is not None
                    else np.zeros(n, dtype=bool)),
        "snr": np.round(snr_estimate(library.wave, library.flux), 2),
    })


def make_splits(library, holdout_ids=None, n_calibration: int = 30, val_fraction: float = 0.15,
                seed: int = 0, holdout_file=None) -> pd.DataFrame:
    """The split table of a :class:`~remap_lib.data.sources.miles.MilesLibrary` (one row per star, by id).

    Columns: id ('mNNNN'), name, teff, logg, feh, refs, sptype, cluster, snr, role (see the module
    docstring for the rule). ``holdout_ids`` (ids as 'm0123', '123' or ints) and the ids in
    ``holdout_file`` (see :func:`read_holdout_file`) get role 'holdout' and no other; an id not
    in ``library`` raises :class:`RemapDataError` naming the file (or ``holdout_ids``) and the ids.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError("val_fraction must be in [0, 1)")
    if n_calibration < 0:
        raise ValueError("n_calibration must be >= 0")
    table = _library_table(library)
    if table["id"].duplicated().any():
        raise RemapDataError("make_splits", "library holds duplicate MILES ids")
    table = table.sort_values("id", kind="stable").reset_index(drop=True)
    held_ids = _holdout_set(holdout_ids, holdout_file, table["id"])
    held = table["id"].isin(held_ids).to_numpy()

    role = np.full(len(table), "other", dtype=object)
    role[_giant_mask(table)] = "giant_candidate"
    dwarfs = _dwarf_mask(table)
    calib = _pick_calibration(table, held, n_calibration) if n_calibration else []
    role[calib] = "calibration"
    rest = np.flatnonzero(dwarfs & ~held & (role != "calibration"))
    valid = _pick_validation(table, rest, val_fraction, seed)
    role[rest] = "finetune"
    role[valid] = "validation"
    role[held] = "holdout"
    table["role"] = role
    return table[list(COLUMNS)]


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------

def write_splits(df: pd.DataFrame, path=DEFAULT_SPLITS, seed: int | None = None, note: str = "") -> Path:
    """Write the table atomically as CSV with a ``#`` header stating the rule (and ``seed``)."""
    _validate(df, "write_splits")
    path = Path(path)
    counts = df["role"].value_counts()
    header = ["# remap MILES splits (one row per MILES star); regenerate: python -m remap_lib.data.splits",
              f"# rule: {RULE}",
              f"# seed: {seed if seed is not None else 'unknown'}",
              "# counts: " + ", ".join(f"{r}={int(counts.get(r, 0))}" for r in ROLES)]
    if note:
        header.append(f"# note: {note}")
    body = df[list(COLUMNS)].to_csv(index=False, float_format="%.10g", lineterminator="\n")
    with atomic_write(path, "w") as fh:
        fh.write("\n".join(header) + "\n" + body)
    return path


def read_splits(path=DEFAULT_SPLITS) -> pd.DataFrame:
    """Read and validate a split table written by :func:`write_splits`."""
    path = require_nonempty(repo_file(path, "split table"))
    with open(path, encoding="utf-8") as fh:
        lines = [line for line in fh if not line.startswith("#")]
    try:
        df = pd.read_csv(io.StringIO("".join(lines)), dtype={"id": str, "name": str, "refs": str, "sptype": str,
                                                              "role": str},
                         keep_default_na=False, na_values={"teff": ["", "nan"], "logg": ["", "nan"],
                                                           "feh": ["", "nan"], "snr": ["", "nan"]})
    except (ValueError, pd.errors.ParserError) as err:
        raise RemapDataError(path, f"not a split table ({err})") from err
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise RemapDataError(path, f"missing column(s) {missing}")
    try:
        for col in ("teff", "logg", "feh", "snr"):
            df[col] = pd.to_numeric(df[col]).astype(float)
        df["cluster"] = df["cluster"].map({"True": True, "False": False, True: True, False: False})
        if df["cluster"].isna().any():
            raise ValueError("cluster must be True/False")
        df["cluster"] = df["cluster"].astype(bool)
    except ValueError as err:
        raise RemapDataError(path, f"bad value ({err})") from err
    _validate(df, path)
    return df[list(COLUMNS)]


def _validate(df: pd.DataFrame, source) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise RemapDataError(source, f"missing column(s) {missing}")
    bad_ids = [i for i in df["id"] if not re.fullmatch(r"m\d{4}", str(i))]
    if bad_ids:
        raise RemapDataError(source, f"malformed id(s) {bad_ids[:5]}")
    dup = df["id"][df["id"].duplicated()].tolist()
    if dup:
        raise RemapDataError(source, f"duplicate id(s) {dup[:5]}")
    bad_roles = sorted(set(df["role"]) - set(ROLES))
    if bad_roles:
        raise RemapDataError(source, f"unknown role(s) {bad_roles}")
    dwarf, giant = _dwarf_mask(df), _giant_mask(df)
    role = df["role"].to_numpy()
    wrong = df["id"][np.isin(role, ["calibration", "validation", "finetune"]) & ~dwarf].tolist()
    if wrong:
        raise RemapDataError(source, f"non-dwarf(s) in a dwarf role: {wrong[:5]}")
    wrong = df["id"][(role == "giant_candidate") & ~giant].tolist()
    if wrong:
        raise RemapDataError(source, f"non-giant(s) with role giant_candidate: {wrong[:5]}")


def main(argv=None) -> Path:
    """Regenerate the split table from the cached MILES library (``python -m remap_lib.data.splits``)."""
    parser = argparse.ArgumentParser(prog="python -m remap_lib.data.splits", description=main.__doc__)
    parser.add_argument("--out", default=str(DEFAULT_SPLITS), help="output CSV (default: %(default)s)")
    parser.add_argument("--holdout", default=None, help="file of MILES ids to hold out, one per line")
    parser.add_argument("--n-calibration", type=int, default=30)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from remap_lib.data.sources.miles import load_miles

    library = load_miles(progress=False)
    df = make_splits(library, n_calibration=args.n_calibration, val_fraction=args.val_fraction,
                     seed=args.seed, holdout_file=args.holdout)
    note = f"n_calibration={args.n_calibration}, val_fraction={args.val_fraction}"
    if args.holdout:
        note += f", holdout file {os.path.basename(args.holdout)}"
    out = write_splits(df, args.out, seed=args.seed, note=note)
    print(f"{out}: " + ", ".join(f"{r} {int((df['role'] == r).sum())}" for r in ROLES))
    return out


if __name__ == "__main__":
    main()
