"""remap_lib.data.cache: extraction of one folder from a verified archive, on archives made here.

Each archive is placed in ``<cache>/archives/<filename>`` with its true sha256, so no download
(and no network) ever happens.
"""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from remap_lib.data import cache
from remap_lib.data.cache import PackageArchive, cache_dir, extract_archive
from remap_lib.fileio import RemapDataError, sha256_file


def _wheel(path):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pkg/__init__.py", "")
        zf.writestr("pkg/data/", "")  # a directory entry
        zf.writestr("pkg/data/a.txt", "alpha")
        zf.writestr("pkg/data/sub/b.txt", "beta")
        zf.writestr("pkg/database.txt", "shares the prefix text but not the folder")
        zf.writestr("pkg-1.0.dist-info/RECORD", "")
    return path


def _sdist(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _archive(cache_root, maker, filename, prefix, sdist=False, sha256=None, **kw):
    path = cache_root / "archives" / filename
    path.parent.mkdir(parents=True)
    maker(path, **kw)
    return PackageArchive("pkg==1.0", filename, sha256 or sha256_file(path), prefix, sdist=sdist)


@pytest.fixture
def no_download(monkeypatch):
    """Fail loudly if anything tries to call pip."""
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")
    monkeypatch.setattr(cache.subprocess, "run", refuse)


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("REMAP_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert (tmp_path / "c").is_dir()


def test_extract_wheel_folder_only(tmp_path, no_download):
    archive = _archive(tmp_path, _wheel, "pkg-1.0-py3-none-any.whl", "pkg/data/")
    out = extract_archive(archive, tmp_path)
    root = tmp_path / "extracted" / "pkg-1.0-py3-none-any"
    assert out == root / "pkg/data/"
    assert (out / "a.txt").read_text() == "alpha"
    assert (out / "sub" / "b.txt").read_text() == "beta"
    assert _files(root) == ["pkg/data/a.txt", "pkg/data/sub/b.txt"]
    # no temporary extraction folder left beside it
    assert [p.name for p in (tmp_path / "extracted").iterdir()] == ["pkg-1.0-py3-none-any"]


def test_extract_single_file_from_tar_gz(tmp_path, no_download):
    members = {"pkg-1.0/COM/lists/ges": "line list", "pkg-1.0/COM/lists/other": "no",
               "pkg-1.0/setup.py": ""}
    archive = _archive(tmp_path, _sdist, "pkg-1.0.tar.gz", "pkg-1.0/COM/lists/ges", sdist=True, members=members)
    out = extract_archive(archive, tmp_path)
    assert out == tmp_path / "extracted" / "pkg-1.0" / "pkg-1.0/COM/lists/ges"
    assert out.read_text() == "line list"
    assert _files(tmp_path / "extracted") == ["pkg-1.0/pkg-1.0/COM/lists/ges"]


def test_hash_mismatch_names_file_and_extracts_nothing(tmp_path, no_download):
    archive = _archive(tmp_path, _wheel, "pkg-1.0-py3-none-any.whl", "pkg/data/", sha256="ab" * 32)
    with pytest.raises(RemapDataError, match="pkg-1.0-py3-none-any.whl.*sha256 mismatch") as err:
        extract_archive(archive, tmp_path)
    assert "ab" * 32 in str(err.value)
    extracted = tmp_path / "extracted"
    assert not extracted.exists() or list(extracted.iterdir()) == []


def test_second_call_does_not_reextract(tmp_path, no_download, monkeypatch):
    archive = _archive(tmp_path, _wheel, "pkg-1.0-py3-none-any.whl", "pkg/data/")
    out = extract_archive(archive, tmp_path)
    (out / "a.txt").write_text("edited after extraction")

    def refuse(*args, **kwargs):
        raise AssertionError("archive opened again")
    monkeypatch.setattr(cache, "download_archive", refuse)
    monkeypatch.setattr(cache, "_archive_members", refuse)
    assert extract_archive(archive, tmp_path) == out
    assert (out / "a.txt").read_text() == "edited after extraction"


def test_second_folder_of_same_archive_is_merged(tmp_path, no_download):
    first = _archive(tmp_path, _wheel, "pkg-1.0-py3-none-any.whl", "pkg/data/sub/")
    second = PackageArchive(first.requirement, first.filename, first.sha256, "pkg-1.0.dist-info/")
    extract_archive(first, tmp_path)
    extract_archive(second, tmp_path)
    assert _files(tmp_path / "extracted" / "pkg-1.0-py3-none-any") == [
        "pkg-1.0.dist-info/RECORD", "pkg/data/sub/b.txt"]


def test_unsafe_member_path_rejected(tmp_path, no_download):
    def evil_wheel(path):
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("pkg/data/ok.txt", "fine")
            zf.writestr("pkg/data/../../../x", "escape")
    archive = _archive(tmp_path, evil_wheel, "pkg-1.0-py3-none-any.whl", "pkg/data/")
    with pytest.raises(RemapDataError, match="unsafe member path"):
        extract_archive(archive, tmp_path)
    assert not (tmp_path / "x").exists()
    assert _files(tmp_path / "extracted") == []


def test_missing_prefix_and_unreadable_archive(tmp_path, no_download):
    archive = _archive(tmp_path, _wheel, "pkg-1.0-py3-none-any.whl", "pkg/nothing/")
    with pytest.raises(RemapDataError, match="no member under 'pkg/nothing/'"):
        extract_archive(archive, tmp_path)

    other = tmp_path / "other"
    junk = _archive(other, lambda p: p.write_bytes(b"not an archive at all"), "junk-1.0.tar.gz", "x", sdist=True)
    with pytest.raises(RemapDataError, match="junk-1.0.tar.gz.*not a readable zip or tar"):
        extract_archive(junk, other)
