"""Where :func:`~remap_lib.prediction.streaming.predict_files` may write, and how it says it cannot.

An output may not be an input, nor a file a later run on the same inputs would read back as a spectrum
(:func:`check_output_path`); one run at a time holds it (:class:`OutputLock`); and an existing output
is this run's own when it records this run's fingerprint (:func:`recorded_digest`). Failures are
:class:`OutputRefused` (the path is not acceptable) or :class:`OutputError` (it cannot be written now),
each naming the path and the problem.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import time
from pathlib import Path

from remap_lib.prediction.tables import H5_TABLE_PATH, OUTPUT_FORMATS
from remap_lib.spectra.inputfiles import has_supported_suffix

LOCK_SUFFIX = ".lock"


class OutputError(Exception):
    """The output cannot be written now: another run holds it, permission denied, disk full (CLI exit 4)."""


class OutputRefused(ValueError):
    """The output path is not acceptable: an input, read back by a later run, an existing file (CLI exit 2)."""


class WriteFailed(Exception):
    def __init__(self, path, err: OSError):
        super().__init__(f"cannot write {path}: {describe_os_error(err)}")
        self.err = err


def describe_os_error(err: OSError) -> str:
    """``No space left on device (ENOSPC)``: the reason and its errno name, for a search engine."""
    code = errno.errorcode.get(err.errno or 0, "")
    return f"{err.strerror or err}{f' ({code})' if code else ''}"



def check_output_path(output, inputs, files) -> None:
    """OutputRefused when ``output`` is a directory, one of ``files``, or would be read back as an input.

    ``inputs`` are the paths, directories and patterns as given, ``files`` what they expanded to.
    """
    output = Path(output)
    if output.is_dir():
        raise OutputRefused(f"{output}: is a directory; the output is a file ending in {', '.join(OUTPUT_FORMATS)}")
    above = next((p for p in output.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise OutputRefused(f"{output}: {above} is a file, not a directory")
    target = output.resolve()
    for f in files:
        if Path(f).resolve() == target or (output.exists() and os.path.samefile(f, output)):
            raise OutputRefused(f"{output}: is one of the inputs; the results would replace that spectrum: "
                                "choose another output file")
    read_back = has_supported_suffix(output) and not output.name.startswith(".")
    for item in [inputs] if isinstance(inputs, str | Path) else inputs:
        path = Path(item)
        if path.is_dir() and read_back and target.parent == path.resolve():
            raise OutputRefused(f"{output}: is inside the input directory {path}, so a later run on it would read "
                                f"the results back as a spectrum: write them outside it, e.g. to "
                                f"{path.resolve().parent / output.name}")
        if (not path.exists() and any(ch in str(item) for ch in "*?[") and read_back
                and Path(os.path.abspath(output)).match(os.path.abspath(item))):
            raise OutputRefused(f"{output}: matches the input pattern {item}, so a later run would read the "
                                "results back as a spectrum: choose an output file the pattern does not match")


class OutputLock:
    """An exclusive lock on an output for one run: ``.NAME.lock`` beside it, holding the run's PID.

    ``fcntl.flock`` locks belong to the open file, so the kernel releases them when the process ends,
    however it ends: a killed run never blocks the next one. Raises :class:`OutputError` naming the
    PID of the run that holds the lock.
    """

    def __init__(self, output):
        self.output = Path(output)
        self.path = self.output.with_name(f".{self.output.name}{LOCK_SUFFIX}")
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(fd)
                os.close(fd)
                raise OutputError(f"{self.output}: another remap predict ({holder}) is writing this output; wait "
                                  "for it to finish, or stop it and rerun (its finished work is kept)") from None
            except BaseException:
                os.close(fd)
                raise
            try:
                ours = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                ours = False
            if ours:
                break
            os.close(fd)  # the previous holder removed the file between our open and our lock: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding it, so no other run can be locking this same file
        os.close(self.fd)
        self.fd = None


def _lock_holder(fd: int) -> str:
    for _ in range(20):  # the holder writes its PID just after locking: give it a moment
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return f"PID {text}"
        time.sleep(0.01)
    return "PID unknown"


def recorded_digest(output: Path, fmt: str) -> str | None:
    """The run fingerprint an earlier :func:`predict_files` stored in ``output``; None if it has none."""
    try:
        if fmt == "hdf5":
            import h5py

            with h5py.File(output, "r") as h5:
                return json.loads(h5[H5_TABLE_PATH].attrs.get("meta", "{}")).get("run_fingerprint")
        if fmt == "fits":
            from astropy.io import fits

            return json.loads(fits.getheader(output, 1).get("REMAPMET", "{}")).get("run_fingerprint")
        if fmt == "ascii.ecsv":
            with open(output, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if not line.startswith("#"):
                        break
                    found = re.search(r"\brun_fingerprint:\s*['\"]?([0-9a-f]{64})\b", line)
                    if found:
                        return found.group(1)
    except Exception:  # noqa: BLE001 - not one of ours, or damaged: either way it is not this run's output
        return None
    return None
