"""File helpers shared by every source: atomic writes, hashes and clear data errors.

Every file remap writes goes through :func:`atomic_write`, so an interrupted run leaves
either the complete file or nothing, never a truncated one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path


class RemapDataError(ValueError):
    """Bad input data. The message always names the offending file (or array) and the problem."""

    def __init__(self, source, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path, data) -> Path:
    """``data`` as indented JSON at ``path`` with a final newline, written atomically (:func:`atomic_write`);
    returns the path."""
    import json

    path = Path(path)
    with atomic_write(path, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")
    return path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` for libraries that open files themselves (h5py)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path):
    """Hold an exclusive lock on ``path`` + ``.lock`` for a read-change-write of ``path``, so that two
    processes updating one file in turn do not lose each other's change (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _publish(tmp: str, path: Path) -> None:
    # mkstemp makes 0600 files; give the result the permissions a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def sha256_file(path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large archives need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path, expected: str) -> None:
    """Raise :class:`RemapDataError` unless ``path`` hashes to ``expected``."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise RemapDataError(path, f"sha256 mismatch: expected {expected}, got {actual}")


def require_nonempty(path, source=None) -> Path:
    """Return ``path`` as a Path, failing clearly when it is missing or empty.

    ``source``: the name the error gives (a URL, say, for a download's temporary file); default ``path``.
    """
    path = Path(path)
    source = path if source is None else source
    if not path.exists():
        raise RemapDataError(source, "file does not exist")
    if path.stat().st_size == 0:
        raise RemapDataError(source, "file is empty (0 bytes)")
    return path
