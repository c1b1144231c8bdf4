"""remap_lib.prediction.checkpoints: a checkpoint is used again only by its own run, from row 0, without gaps."""

import numpy as np

from remap_lib.prediction.checkpoints import (
    Checkpoints,
    clean_text,
    discard,
    kept_rows,
    load_part,
    parts_by_chunk,
    run_digest,
    usable_parts,
)


def test_digest_is_the_fingerprint_whatever_the_key_order():
    a = {"inputs": [["x.fits", 10, 1]], "model_sha256": "ab", "options": {"pmf": False}}
    b = {"options": {"pmf": False}, "model_sha256": "ab", "inputs": [["x.fits", 10, 1]]}
    assert run_digest(a) == run_digest(b) and len(run_digest(a)) == 64
    assert run_digest(a) != run_digest({**a, "options": {"pmf": True}})


class _Table(dict):
    """The two things Checkpoints reads from an astropy Table: its column names and its length."""

    @property
    def colnames(self):
        return list(self)

    def __len__(self):
        return len(next(iter(self.values())))


def test_rows_saved_in_pieces_are_used_again_only_by_their_run(tmp_path):
    checkpoints = Checkpoints(tmp_path, "run-a", save_every=1e9)  # saved when asked, not by the clock
    checkpoints.begin(3, 0)
    checkpoints.add(_Table(source=np.array(["a", "b"]), teff=np.array([5000.0, 5100.0])))
    checkpoints.save()
    checkpoints.add(_Table(source=np.array(["c"]), teff=np.array([5200.0])))
    checkpoints.save()
    found = parts_by_chunk(tmp_path)
    assert [(a, b) for a, b, _ in found[3]] == [(0, 2), (2, 3)] and kept_rows(tmp_path) == (2, 3)
    paths, done = usable_parts(found[3], 3, 3, "run-a")
    assert done == 3 and [load_part(p)["source"].tolist() for p in paths] == [["a", "b"], ["c"]]
    # another run's checkpoints are deleted, not used
    paths, done = usable_parts(parts_by_chunk(tmp_path)[3], 3, 3, "run-b")
    assert (paths, done) == ([], 0) and not list(tmp_path.glob("chunk_*.npz"))


def test_a_gap_ends_what_is_used(tmp_path):
    checkpoints = Checkpoints(tmp_path, "run", save_every=1e9)
    for start in (0, 5):  # rows 0-1 and 5-6: rows 2-4 are missing
        checkpoints.begin(0, start)
        checkpoints.add(_Table(source=np.array(["x", "y"])))
        checkpoints.save()
    paths, done = usable_parts(parts_by_chunk(tmp_path)[0], 0, 10, "run")
    assert done == 2 and len(paths) == 1 and len(list(tmp_path.glob("chunk_*.npz"))) == 1


def test_text_with_undecodable_file_name_bytes_becomes_utf8():
    name = b"caf\xe9.fits".decode("utf-8", "surrogateescape")  # a Latin-1 byte in a UTF-8 locale's view
    cleaned = clean_text(np.array([name, "ok"]))
    assert cleaned.tolist() == ["caf\ufffd.fits", "ok"]
    numbers = np.arange(3.0)
    assert clean_text(numbers) is numbers


def test_discard_removes_the_folder_whole(tmp_path):
    partial = tmp_path / "out.h5.partial"
    partial.mkdir()
    (partial / "chunk_000000_000000-000002.npz").write_bytes(b"x")
    discard(partial)
    assert not partial.exists() and not list(tmp_path.iterdir())
    discard(partial)  # nothing there: nothing to do
