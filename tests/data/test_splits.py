"""MILES splits: the calibration rule, role exclusivity, holdouts, determinism, the committed table."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from remap_lib.data.sources.miles import MilesLibrary
from remap_lib.data.splits import (
    DEFAULT_SPLITS,
    ROLES,
    calibration_candidates,
    make_splits,
    normalize_id,
    read_holdout_file,
    read_splits,
    write_splits,
)
from remap_lib.fileio import RemapDataError


@pytest.fixture(scope="module")
def toy():
    """200 stars: 120 dwarfs (90 with Refs 111), 50 giants, 30 others; a few that C1 must refuse."""
    rng = np.random.default_rng(7)
    n = 200
    wave = np.arange(4800.0, 5900.0, 0.9)
    teff = np.concatenate([rng.uniform(4000, 7000, 120), rng.uniform(4000, 7000, 50), rng.uniform(7100, 9000, 30)])
    logg = np.concatenate([rng.uniform(3.5, 5.0, 120), rng.uniform(0.5, 3.4, 50), rng.uniform(3.0, 4.5, 30)])
    feh = rng.uniform(-2.0, 0.4, n)
    feh[195:] = np.nan
    refs = np.array(["111"] * 90 + ["SKC"] * 30 + ["333"] * 80, dtype=object)
    sptype = np.array(["G2V"] * n, dtype=object)
    cluster = np.zeros(n, dtype=bool)
    cluster[0] = True  # cluster member: never calibration
    sptype[1] = "G6 IV + M6 V"  # composite
    sptype[2] = "G8III"  # giant class contradicting log g
    sptype[3] = "A4"  # not F/G/K
    flux = 1.0 + rng.normal(0, 1, (n, wave.size)) / rng.uniform(20, 200, n)[:, None]
    return MilesLibrary(wave=wave, flux=flux.astype(np.float32), ids=np.arange(1, n + 1) * 3,
                        names=np.array([f"S{i}" for i in range(n)], dtype=object), teff=teff, logg=logg,
                        feh=feh, sptype=sptype, refs=refs, cluster=cluster)


def _check_roles(df, lib):
    assert set(df["role"]) <= set(ROLES)
    assert df["id"].is_unique and len(df) == len(lib)
    dwarf = lib.fgk_dwarfs()
    giant = lib.fgk_giants()
    by_id = dict(zip(df["id"], df["role"], strict=True))
    for i, is_dwarf, is_giant in zip(lib.ids, dwarf, giant, strict=True):
        role = by_id[normalize_id(int(i))]
        if role in ("calibration", "validation", "finetune"):
            assert is_dwarf and not is_giant
        if is_giant:
            assert role in ("giant_candidate", "holdout")


def test_roles(toy):
    df = make_splits(toy)
    _check_roles(df, toy)
    counts = df["role"].value_counts()
    assert counts["calibration"] == 30
    assert counts["giant_candidate"] == 50
    n_rest = 120 - 30
    assert counts["validation"] == round(0.15 * n_rest) and counts["finetune"] == n_rest - round(0.15 * n_rest)
    calib = df[df["role"] == "calibration"]
    assert (calib["refs"] == "111").all() and not calib["cluster"].any()
    assert not set(calib["id"]) & {normalize_id(int(i)) for i in toy.ids[:4]}  # C1 refusals
    assert calibration_candidates(df).sum() == 90 - 4 + int((toy.refs[:4] != "111").sum())
    # spread: the calibration stars span most of the candidates' Teff and [Fe/H] range
    cand = df[calibration_candidates(df)]
    assert calib["teff"].min() - cand["teff"].min() < 150 and cand["teff"].max() - calib["teff"].max() < 150
    assert np.ptp(calib["feh"]) > 0.7 * np.ptp(cand["feh"])


def test_deterministic_and_seeded(toy):
    a, b = make_splits(toy), make_splits(toy)
    pd.testing.assert_frame_equal(a, b)
    c = make_splits(toy, seed=1)
    assert (a["role"] == "calibration").eq(c["role"] == "calibration").all()  # calibration needs no seed
    assert not (a["role"] == c["role"]).all()  # validation draw does


def test_holdout_replaces_calibration_star(toy):
    base = make_splits(toy)
    calib = list(base.loc[base["role"] == "calibration", "id"])
    giant = base.loc[base["role"] == "giant_candidate", "id"].iloc[0]
    fine = base.loc[base["role"] == "finetune", "id"].iloc[0]
    held = [calib[4], int(giant[1:]), fine[1:]]  # 'mNNNN', int and bare-number forms
    df = make_splits(toy, holdout_ids=held)
    _check_roles(df, toy)
    roles = dict(zip(df["id"], df["role"], strict=True))
    assert {roles[calib[4]], roles[giant], roles[fine]} == {"holdout"}
    new_calib = list(df.loc[df["role"] == "calibration", "id"])
    assert len(new_calib) == 30 and calib[4] not in new_calib
    assert len(set(new_calib) - set(calib)) == 1  # only the held-out star was replaced
    assert (df["role"] == "holdout").sum() == 3


def test_holdout_file(toy, tmp_path):
    base = make_splits(toy)
    calib = list(base.loc[base["role"] == "calibration", "id"])
    good = tmp_path / "holdout.txt"
    good.write_text(f"# withheld\n{calib[0]}\n\n{int(calib[1][1:])}  # a comment\n")
    assert read_holdout_file(good) == [calib[0], calib[1]]
    df = make_splits(toy, holdout_file=good)
    assert set(df.loc[df["role"] == "holdout", "id"]) == {calib[0], calib[1]}
    assert (df["role"] == "calibration").sum() == 30

    bad = tmp_path / "bad_holdout.txt"
    bad.write_text("m0003\nm9998\n9997\n")
    with pytest.raises(RemapDataError, match=r"bad_holdout\.txt.*m9998, m9997"):
        make_splits(toy, holdout_file=bad)
    junk = tmp_path / "junk.txt"
    junk.write_text("m0003\nHD1234\n")
    with pytest.raises(RemapDataError, match=r"junk\.txt.*'HD1234' \(line 2\)"):
        read_holdout_file(junk)
    with pytest.raises(RemapDataError, match="holdout_ids.*m0002"):
        make_splits(toy, holdout_ids=["m0002"])


def test_write_read_roundtrip(toy, tmp_path):
    df = make_splits(toy)
    path = write_splits(df, tmp_path / "splits.csv", seed=0)
    text = path.read_text()
    assert text.startswith("# remap MILES splits") and "# seed: 0" in text and "Refs == '111'" in text
    back = read_splits(path)
    pd.testing.assert_frame_equal(back[["id", "role", "refs", "sptype"]], df[["id", "role", "refs", "sptype"]])
    np.testing.assert_allclose(back["teff"], df["teff"], rtol=1e-6)
    tampered = tmp_path / "tampered.csv"
    tampered.write_text(text.replace(",giant_candidate\n", ",finetune\n", 1))
    with pytest.raises(RemapDataError, match="tampered.csv.*non-dwarf"):
        read_splits(tampered)


def test_committed_table_matches_the_rule():
    """data/splits/miles_splits.csv is exactly what make_splits gives on the cached MILES library."""
    from remap_lib.data.sources import miles

    try:
        folder = miles.fetch_miles()
    except (RemapDataError, OSError) as err:
        pytest.skip(f"MILES archive not available: {err}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", miles.MilesLabelWarning)
        lib = miles.load_miles(path=folder, progress=False)
    now = make_splits(lib)
    committed = read_splits(DEFAULT_SPLITS)
    assert list(committed["id"]) == list(now["id"])
    assert list(committed["role"]) == list(now["role"])
    for col in ("teff", "logg", "feh", "snr"):
        np.testing.assert_allclose(committed[col], now[col], rtol=1e-5, equal_nan=True)
    counts = committed["role"].value_counts()
    assert counts["calibration"] == 30 and counts["giant_candidate"] == 371
    assert counts["calibration"] + counts["validation"] + counts["finetune"] == 355
