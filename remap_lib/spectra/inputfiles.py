"""Where a user's spectra are: the files that paths, folders and glob patterns name, and their types.

:func:`find_inputs` turns what a user typed into files in a stable order and names the files it
skipped; :func:`file_kind` says which reader a file goes to (:mod:`remap_lib.spectra.readers`), from
its suffix. An input that names nothing, or a file the system will not let us read, fails by name.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import warnings
from pathlib import Path

from remap_lib.fileio import RemapDataError

__all__ = ["SUPPORTED_SUFFIXES", "expand_inputs", "file_kind", "find_inputs", "has_supported_suffix",
           "os_errors_named", "skipped_message"]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")
TABLE_SUFFIXES = (".ecsv", ".csv")
TEXT_SUFFIXES = (".txt", ".dat", ".asc")
HDF5_SUFFIXES = (".h5", ".hdf5")
SUPPORTED_SUFFIXES = FITS_SUFFIXES + TABLE_SUFFIXES + TEXT_SUFFIXES + HDF5_SUFFIXES
MAX_NAMED = 10  # skipped files named in a message; the rest are counted


def has_supported_suffix(path) -> bool:
    return str(path).lower().endswith(SUPPORTED_SUFFIXES)


def find_inputs(inputs) -> tuple[list[Path], list[Path]]:
    """Files named by ``inputs`` (paths, directories or glob patterns) in a stable order, and the skipped ones.

    A directory or a glob pattern contributes its supported files (sorted; a directory is not
    searched recursively); its files of another type are returned second, so callers can say what
    they skipped. Hidden files (``.name``: editor and system files, remap's own temporary files) are
    ignored. A file named explicitly is always taken (an unsupported one then fails in its own row).
    Raises FileNotFoundError when an input names nothing, so a typo is never silently an empty run.
    """
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    files: list[Path] = []
    skipped: list[Path] = []
    for item in inputs:
        path = Path(item)
        is_pattern = not path.exists() and any(ch in str(item) for ch in "*?[")
        if path.is_dir() or is_pattern:
            with os_errors_named(path):  # a folder we may not list is bad input, named like any other
                entries = path.iterdir() if path.is_dir() else map(Path, glob.glob(str(item)))
                entries = sorted(p for p in entries if p.is_file() and not p.name.startswith("."))
            found = [p for p in entries if has_supported_suffix(p)]
            others = [p for p in entries if not has_supported_suffix(p)]
            if not found:
                also = f" ({skipped_message(others)})" if others else ""
                what = "directory holds" if path.is_dir() else "pattern matches"
                raise FileNotFoundError(f"{item}: {what} no {', '.join(SUPPORTED_SUFFIXES)} files{also}")
            files += found
            skipped += others
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"{item}: no such file or directory")
    return files, skipped


def expand_inputs(inputs) -> list[Path]:
    """The files of :func:`find_inputs`; skipped files of unknown type are named in a warning."""
    files, skipped = find_inputs(inputs)
    if skipped:
        warnings.warn(skipped_message(skipped), stacklevel=2)
    return files


def skipped_message(skipped) -> str:
    """``skipped 3 files of unknown type: a.doc, b.png, c (remap reads ...)``."""
    names = ", ".join(str(p) for p in skipped[:MAX_NAMED])
    more = f" and {len(skipped) - MAX_NAMED} more" if len(skipped) > MAX_NAMED else ""
    return (f"skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''} of unknown type: {names}{more} "
            f"(remap reads {', '.join(SUPPORTED_SUFFIXES)})")


def file_kind(path) -> str:
    """``"fits"``, ``"table"``, ``"text"`` or ``"hdf5"`` from the suffix; RemapDataError for anything else."""
    name = str(path).lower()
    if name.endswith(FITS_SUFFIXES):
        return "fits"
    if name.endswith(TABLE_SUFFIXES):
        return "table"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    if name.endswith(HDF5_SUFFIXES):
        return "hdf5"
    raise RemapDataError(path, f"unsupported file type; remap reads {', '.join(SUPPORTED_SUFFIXES)}")


@contextlib.contextmanager
def os_errors_named(path):
    """An input the system will not let us read (permissions, I/O error) fails by name, like bad data."""
    try:
        yield
    except RemapDataError:
        raise
    except OSError as err:
        reason = err.strerror or str(err)
        code = errno.errorcode.get(err.errno, "")
        raise RemapDataError(path, f"cannot read: {reason}{f' ({code})' if code else ''}") from err
