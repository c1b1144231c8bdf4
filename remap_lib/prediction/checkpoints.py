"""The checkpoints of a streaming prediction run, and the fingerprint that binds them to it.

Finished rows are saved as ``chunk_K_A-B.npz`` (rows A to B of chunk K) in ``OUTPUT.partial/``, each
written atomically and holding the run's digest (:func:`run_digest` of :func:`run_fingerprint`: every
input's path, size and modification time, the model's sha256 and the options). A checkpoint is used
again only by a run with the same digest, from row 0 of its chunk without gaps (:func:`usable_parts`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from remap_lib.fileio import atomic_write
from remap_lib.prediction.outputguard import WriteFailed

LAYOUT = 2  # of the partial folder; a folder of another layout is never reused
RUN_KEYS = ("__run__", "__chunk__", "__rows__")  # what binds a checkpoint file to its run
_PART_NAME = re.compile(r"chunk_(\d+)_(\d+)-(\d+)\.npz")


def run_fingerprint(files, predictor, options: dict) -> dict:
    from remap_lib.prediction.inference import _remap_version

    stats = [(str(Path(f).resolve()), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    fingerprint = {"layout": LAYOUT, "remap_version": _remap_version(), "inputs": stats,
                   "model_sha256": predictor.sha256, "members": len(predictor.networks), "options": options}
    return json.loads(json.dumps(fingerprint))  # as it reads back from the manifest (tuples become lists)


def run_digest(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def manifest_digest(manifest: Path) -> str | None:
    try:
        return json.loads(manifest.read_text())["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def part_path(partial: Path, k: int, a: int, b: int) -> Path:
    return partial / f"chunk_{k:06d}_{a:06d}-{b:06d}.npz"


def parts_by_chunk(partial: Path) -> dict[int, list[tuple[int, int, Path]]]:
    """Checkpoint files in ``partial`` as ``{chunk: [(first row, end row, path), ...]}``, by first row."""
    found: dict[int, list[tuple[int, int, Path]]] = {}
    for path in partial.glob("chunk_*.npz"):  # one listing for all chunks: surveys have many
        m = _PART_NAME.fullmatch(path.name)
        if m:
            found.setdefault(int(m[1]), []).append((int(m[2]), int(m[3]), path))
    return {k: sorted(v) for k, v in found.items()}


def _belongs(path: Path, digest: str, k: int, a: int, b: int) -> bool:
    """Whether the checkpoint at ``path`` is rows ``a:b`` of chunk ``k`` of the run ``digest``."""
    try:
        with np.load(path, allow_pickle=False) as z:  # members load lazily: only the binding is read
            return (str(z["__run__"]) == digest and int(z["__chunk__"]) == k
                    and [int(x) for x in z["__rows__"]] == [a, b] and len(z["source"]) == b - a)
    except Exception:  # noqa: BLE001 - truncated, not a zip, missing keys: all mean "not reusable"
        return False


def usable_parts(parts, k: int, n_rows: int, digest: str) -> tuple[list[Path], int]:
    """Of ``parts`` (chunk ``k``'s entry of :func:`parts_by_chunk`) those this run can use, and the rows
    they cover (from 0, without gaps). The others (another run's, after a gap, damaged) are deleted.
    """
    usable, done = [], 0
    for a, b, path in parts:
        if a == done and b <= n_rows and _belongs(path, digest, k, a, b):
            usable.append(path)
            done = b
        else:
            path.unlink(missing_ok=True)
    return usable, done


def _save_part(path: Path, columns: dict[str, np.ndarray], digest: str, k: int, a: int, b: int) -> None:
    try:
        with atomic_write(path) as fh:
            np.savez(fh, __run__=np.array(digest), __chunk__=np.array(k), __rows__=np.array([a, b]), **columns)
    except OSError as err:
        raise WriteFailed(path, err) from err


def load_part(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k not in RUN_KEYS}


class Checkpoints:
    """Finished rows of the chunk in progress, saved as one checkpoint at most every ``save_every`` seconds."""

    def __init__(self, partial: Path, digest: str, save_every: float):
        self.partial, self.digest, self.save_every = partial, digest, save_every
        self.chunk, self.start, self.pieces, self.rows = -1, 0, [], 0
        self.last_save = time.monotonic()

    def begin(self, k: int, start: int) -> None:
        self.chunk, self.start, self.pieces, self.rows = k, start, [], 0

    def add(self, table) -> None:
        self.pieces.append(table_to_columns(table))
        self.rows += len(table)
        if time.monotonic() - self.last_save >= self.save_every:
            self.save()

    def save(self) -> None:
        if not self.rows:
            return
        columns = {name: clean_text(np.concatenate([p[name] for p in self.pieces])) for name in self.pieces[0]}
        end = self.start + self.rows
        _save_part(part_path(self.partial, self.chunk, self.start, end), columns, self.digest, self.chunk,
                   self.start, end)
        self.start, self.pieces, self.rows = end, [], 0
        self.last_save = time.monotonic()


def clean_text(values: np.ndarray) -> np.ndarray:
    """Text that every output format can hold as UTF-8.

    Under a non-UTF-8 locale Python spells undecodable file-name bytes as lone surrogates, which no
    encoder accepts: they become the UTF-8 text the bytes are (or U+FFFD where they are not UTF-8).
    """
    if values.dtype.kind != "U":
        return values
    try:
        np.char.encode(values, "utf-8")
        return values
    except UnicodeEncodeError:
        return np.array([v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for v in values.ravel()],
                        dtype=str).reshape(values.shape)


def kept_rows(partial: Path) -> tuple[int, int]:
    """(checkpoint files, spectra in them) in ``partial``."""
    if not partial.is_dir():
        return 0, 0
    spans = [(int(m[2]), int(m[3])) for p in partial.glob("chunk_*.npz") if (m := _PART_NAME.fullmatch(p.name))]
    return len(spans), sum(b - a for a, b in spans)


def discard(partial: Path) -> None:
    """Remove a partial folder: renamed first, so a run killed half-way never leaves half a folder to resume."""
    if not partial.exists():
        return
    trash = partial.with_name(f".{partial.name}.discarded")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(partial, trash)
    shutil.rmtree(trash)



def table_to_columns(table) -> dict[str, np.ndarray]:
    return {name: np.asarray(table[name]) for name in table.colnames}
