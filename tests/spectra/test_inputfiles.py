"""Where a user's spectra are: files from paths, folders and patterns; their types; what is skipped."""

from __future__ import annotations

import pytest

from remap_lib.fileio import RemapDataError
from remap_lib.spectra.inputfiles import expand_inputs, file_kind, find_inputs, skipped_message


def test_expand_directory_keeps_supported_files_sorted_and_names_the_others(tmp_path):
    for name in ["b.fits", "a.csv", "c.ecsv", "f.txt", "d.h5", "e.fits.gz", "README", "plot.png", ".DS_Store",
                 ".b.fits.x1y2.part"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.fits").mkdir()  # a directory, even with a spectrum suffix, is not a file
    files, skipped = find_inputs(tmp_path)
    assert [p.name for p in files] == ["a.csv", "b.fits", "c.ecsv", "d.h5", "e.fits.gz", "f.txt"]
    assert [p.name for p in skipped] == ["README", "plot.png"]  # hidden files are neither
    with pytest.warns(UserWarning, match=r"skipped 2 files of unknown type: .*README, .*plot.png \(remap reads"):
        assert expand_inputs(tmp_path) == files


def test_expand_empty_directory_is_an_error(tmp_path):
    (tmp_path / "notes.doc").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"directory holds no .* files \(skipped 1 file of unknown type: "
                       r".*notes.doc"):
        expand_inputs(tmp_path)


def test_expand_glob_and_lists(tmp_path):
    for name in ["s2.fits", "s10.fits", "s1.fits", "t.csv"]:
        (tmp_path / name).write_bytes(b"x")
    got = expand_inputs(str(tmp_path / "s*.fits"))
    assert [p.name for p in got] == ["s1.fits", "s10.fits", "s2.fits"]
    both = expand_inputs([tmp_path / "t.csv", str(tmp_path / "s1*.fits")])
    assert [p.name for p in both] == ["t.csv", "s1.fits", "s10.fits"]


def test_expand_missing_path(tmp_path):
    missing = tmp_path / "nope.fits"
    with pytest.raises(FileNotFoundError, match="nope.fits: no such file or directory"):
        expand_inputs([missing])


def test_expand_pattern_matching_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"\*\.fits: pattern matches no .* files$"):
        expand_inputs(str(tmp_path / "*.fits"))


def test_directory_we_may_not_list_is_named(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    def refuse(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(RemapDataError) as err:
        find_inputs(tmp_path)
    assert err.value.source == str(tmp_path) and err.value.problem == "cannot read: Permission denied (EACCES)"


def test_expand_pattern_names_the_files_of_unknown_type_it_matched(tmp_path):
    for name in ["a.fits", "b.doc", ".c.fits"]:
        (tmp_path / name).write_bytes(b"x")
    files, skipped = find_inputs(str(tmp_path / "*"))
    assert [p.name for p in files] == ["a.fits"] and [p.name for p in skipped] == ["b.doc"]
    with pytest.raises(FileNotFoundError, match=r"pattern matches no .* files \(skipped 1 file of unknown type"):
        expand_inputs(str(tmp_path / "*.doc"))


@pytest.mark.parametrize("name, kind", [("a.FITS", "fits"), ("a.fit.gz", "fits"), ("a.ecsv", "table"),
                                        ("a.hdf5", "hdf5"), ("a.DAT", "text")])
def test_file_kind(name, kind):
    assert file_kind(name) == kind


def test_file_kind_unsupported_suffix(tmp_path):
    path = tmp_path / "spec.doc"
    with pytest.raises(RemapDataError, match="unsupported file type") as err:
        file_kind(path)
    assert err.value.source == str(path)
    assert ".fits" in err.value.problem and ".h5" in err.value.problem


def test_skipped_message_names_ten_and_counts_the_rest():
    names = [f"f{i}.doc" for i in range(12)]
    text = skipped_message(names)
    assert text.startswith("skipped 12 files of unknown type: f0.doc, f1.doc")
    assert "f9.doc and 2 more (remap reads .fits" in text and "f10.doc" not in text
    assert skipped_message(["a.doc"]).startswith("skipped 1 file of unknown type: a.doc (")
