"""remap_lib.fileio: atomic writes, hashes and clear data errors."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from remap_lib.fileio import (
    RemapDataError,
    atomic_path,
    atomic_write,
    require_nonempty,
    sha256_file,
    verify_sha256,
    write_json,
)

# sha256("abc"), FIPS 180-2 appendix B.1
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_atomic_write_publishes_the_file(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target, "w") as fh:
        fh.write("hello")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_text() == "hello"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_write_keeps_old_file_when_block_raises(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as fh:
            fh.write(b"new, half written")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no .part left behind


def test_atomic_write_interrupt_leaves_nothing(tmp_path):
    target = tmp_path / "never.txt"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target, "w") as fh:
            fh.write("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_file_when_block_raises(tmp_path):
    target = tmp_path / "data.h5"
    target.write_bytes(b"old")
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new")
            raise ValueError("library failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.h5"]


def test_atomic_write_result_has_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt", "w") as fh:
            fh.write("x")
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.bin"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o644, f"{name}: {oct(mode)} (mkstemp's 0600 leaked through)"


def test_sha256_of_known_bytes(tmp_path):
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    assert sha256_file(path) == ABC_SHA256
    # chunked reading gives the same digest as one read
    big = tmp_path / "big"
    payload = bytes(range(256)) * 5000
    big.write_bytes(payload)
    assert sha256_file(big, chunk_size=1000) == hashlib.sha256(payload).hexdigest()


def test_verify_sha256_accepts_uppercase_and_names_file_and_hashes_on_mismatch(tmp_path):
    path = tmp_path / "abc.bin"
    path.write_bytes(b"abc")
    verify_sha256(path, ABC_SHA256.upper())
    wrong = "0" * 64
    with pytest.raises(RemapDataError) as err:
        verify_sha256(path, wrong)
    message = str(err.value)
    assert "abc.bin" in message and wrong in message and ABC_SHA256 in message
    assert err.value.source == str(path)


def test_require_nonempty(tmp_path):
    with pytest.raises(RemapDataError, match="missing.dat.*does not exist"):
        require_nonempty(tmp_path / "missing.dat")
    empty = tmp_path / "empty.dat"
    empty.touch()
    with pytest.raises(RemapDataError, match="empty.dat.*empty"):
        require_nonempty(empty)
    full = tmp_path / "full.dat"
    full.write_bytes(b"1")
    assert require_nonempty(str(full)) == full


def test_remap_data_error_is_a_value_error():
    err = RemapDataError("x.fits", "bad header")
    assert isinstance(err, ValueError)
    assert str(err) == "x.fits: bad header"
    assert (err.source, err.problem) == ("x.fits", "bad header")


def test_write_json_is_indented_ends_with_a_newline_and_leaves_nothing_half_written(tmp_path):
    import json

    path = write_json(tmp_path / "sub" / "report.json", {"a": [1, 2.5], "b": None})
    assert path == tmp_path / "sub" / "report.json"
    assert path.read_text() == '{\n "a": [\n  1,\n  2.5\n ],\n "b": null\n}\n'
    assert json.loads(path.read_text()) == {"a": [1, 2.5], "b": None}
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})  # not serializable: the old report stays whole
    assert json.loads(path.read_text()) == {"a": [1, 2.5], "b": None}
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]
