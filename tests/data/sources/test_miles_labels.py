"""The MILES label files: parsing, sentinels, the id erratum, disagreements between the two files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from milesfake import DB_TEXT, IDS, TXT_HEADER, TXT_ROWS, write_folder

from remap_lib.data.sources import miles_labels
from remap_lib.data.sources.miles_labels import MilesLabelWarning, read_miles_labels, read_params_db, read_params_txt
from remap_lib.fileio import RemapDataError


@pytest.fixture
def folder(tmp_path):
    """A miniature MILES folder: both label files and one spectrum per row."""
    return write_folder(tmp_path)


def test_read_params_txt(folder):
    t = read_params_txt(folder / miles_labels.PARAMS_TXT)
    assert list(t["id"]) == list(IDS)
    assert list(t["name"]) == ["HD224930", "G156-031", "M71 X"]
    assert list(t["cluster"]) == [False, False, True]
    assert list(t["sptype"]) == ["G3 V", "M7e", "HB"]
    assert list(t["cat"]) == ["673", "705", "105"]
    assert list(t["refs"]) == ["SKC", "33", "2"]
    assert list(t["libraries"]) == ["LIE", "L", "L"]
    np.testing.assert_allclose(t["teff"], [5305, 2748, 5170])
    np.testing.assert_allclose(t["logg"], [4.49, 5.09, 2.41])
    assert np.isnan(t["feh"][1]) and t["feh"][0] == -0.75


def test_read_params_db_sentinels(tmp_path):
    path = tmp_path / "params.db"
    path.write_text("#MILES Teff logg feh\n  0407 99999   9999     9999\n  0838  2748   5.09  9999.0\n"
                    "  0001  5305   4.49    -0.75\n")
    t = read_params_db(path)
    assert list(t["id"]) == [407, 838, 1]
    assert t[["teff", "logg", "feh"]].iloc[0].isna().all()
    assert t["teff"][1] == 2748 and np.isnan(t["feh"][1])
    assert t["feh"][2] == -0.75


def test_txt_all_missing_row(tmp_path):
    path = tmp_path / miles_labels.PARAMS_TXT
    path.write_text(TXT_HEADER + "HD098468               0407         K0                --     --"
                    "      --     --               \n")
    t = read_params_txt(path)
    assert t["id"][0] == 407 and t["refs"][0] == "" and t["sptype"][0] == "K0"
    assert t[["teff", "logg", "feh"]].iloc[0].isna().all()


def test_id_erratum_is_repaired_and_noted(tmp_path):
    path = tmp_path / "params.db"
    path.write_text("  0022  5917   3.96    -1.32\n  022.  7950   3.95     0.35\n")
    notes = []
    t = read_params_db(path, notes)
    assert list(t["id"]) == [22, 221]
    assert len(notes) == 1 and "'022.'" in notes[0] and "0221" in notes[0]


def test_bad_id_names_file_and_line(tmp_path):
    path = tmp_path / "params.db"
    path.write_text("  0001  5305   4.49    -0.75\n  00x2  5000   4.00     0.00\n")
    with pytest.raises(RemapDataError, match=r"params\.db: line 2: MILES id '00x2'"):
        read_params_db(path)


def test_bad_number_and_duplicate_ids(tmp_path):
    path = tmp_path / "params.db"
    path.write_text("  0001  5305   abc    -0.75\n")
    with pytest.raises(RemapDataError, match=r"params\.db: line 1: logg 'abc'"):
        read_params_db(path)
    path.write_text("  0001  5305   4.49    -0.75\n  0001  5305   4.49    -0.75\n")
    with pytest.raises(RemapDataError, match="more than once: 0001"):
        read_params_db(path)


def test_txt_bad_header_and_spilled_field(tmp_path):
    path = tmp_path / miles_labels.PARAMS_TXT
    path.write_text("Name  Teff\nHD1 5000\n")
    with pytest.raises(RemapDataError, match=r"paramsMILES_v9\.1\.txt: header line has no column 'MILES'"):
        read_params_txt(path)
    # a spectral type so long that it runs into the Teff column
    row = TXT_ROWS.splitlines()[0].replace("G3 V" + " " * 12, "G3 IIIabcdefghij")
    path.write_text(TXT_HEADER + row + "\n")
    with pytest.raises(RemapDataError, match="line 4: a field runs across the start of column 'teff'"):
        read_params_txt(path)


def test_empty_label_file_named(tmp_path):
    (tmp_path / miles_labels.PARAMS_TXT).write_bytes(b"")
    with pytest.raises(RemapDataError, match=r"paramsMILES_v9\.1\.txt: file is empty"):
        read_params_txt(tmp_path / miles_labels.PARAMS_TXT)


def test_merge_agreeing_files_is_silent(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = read_miles_labels(folder)
    assert len(labels) == 3 and labels.disagreements == ()


def test_disagreements_are_reported_not_dropped(folder):
    db = DB_TEXT.replace("  0001  5305", "  0001  5300") + "  0999  6000   4.00     0.00\n"
    (folder / miles_labels.PARAMS_DB).write_text(db)
    with pytest.warns(MilesLabelWarning, match="2 disagreement"):
        labels = read_miles_labels(folder)
    t = labels.table.set_index("id")
    assert t.loc[1, "teff"] == 5305  # the catalogue wins
    assert t.loc[999, "teff"] == 6000 and t.loc[999, "name"] == ""  # db-only id kept
    assert any("teff = 5305.0" in d and "5300.0" in d for d in labels.disagreements)
    assert any("0999" in d and "not in paramsMILES" in d for d in labels.disagreements)


def test_real_catalogue(real_folder):
    """The label files: 985 stars, 946 with all labels; 354 FGK dwarfs and 369 giants with
    4000 < Teff < 7000 K (strict). These are the numbers the book's data chapter quotes."""
    labels = read_miles_labels(real_folder)
    t = labels.table
    assert len(t) == 985 and list(t["id"]) == list(range(1, 986))
    assert labels.disagreements == ()
    assert len(labels.notes) == 2 and all("'022.' read as 0221" in n for n in labels.notes)
    assert t.set_index("id").loc[221, "name"] == "HD044691A"
    full = t[["teff", "logg", "feh"]].notna().all(axis=1)
    assert full.sum() == 946
    fgk = full & (t["teff"] > 4000) & (t["teff"] < 7000)
    assert (fgk & (t["logg"] >= 3.5)).sum() == 354
    assert (fgk & (t["logg"] < 3.5)).sum() == 369
