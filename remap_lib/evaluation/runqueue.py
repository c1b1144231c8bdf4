"""Resumable work lists shared by several processes: one JSON record per finished task, claims by lock file.

A task is done when its record exists (written atomically, so a killed run leaves none). Before
working on a task a process claims it by creating ``<claims>/<key>.claim`` with ``O_EXCL`` (only one
creator can win) holding its PID, host name and start time; it removes the claim when the record is
written. A claim whose process is gone (same host, PID no longer running) is stale: the next process
takes it over by renaming it away (an atomic step only one process can win) and claiming afresh. A
claim from another host is never judged stale: its owner may still be running there.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from remap_lib.fileio import atomic_write


def record_path(records_dir, key: str) -> Path:
    return Path(records_dir) / f"{key}.json"


def is_done(records_dir, key: str) -> bool:
    return record_path(records_dir, key).is_file()


def write_record(records_dir, key: str, record: dict) -> Path:
    """Write ``record`` as compact JSON (one file per task: the records are committed)."""
    path = record_path(records_dir, key)
    with atomic_write(path, "w") as fh:
        json.dump(record, fh, separators=(",", ":"), allow_nan=True)
        fh.write("\n")
    return path


def read_record(records_dir, key: str) -> dict:
    return json.loads(record_path(records_dir, key).read_text())


def claim_path(claims_dir, key: str) -> Path:
    return Path(claims_dir) / f"{key}.claim"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_claim(path) -> dict | None:
    """The claim's owner (pid, host, started), or None when the file is gone or unreadable (being written)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def claim_is_stale(owner: dict | None) -> bool:
    return owner is not None and owner.get("host") == socket.gethostname() and not pid_alive(owner.get("pid", -1))


def try_claim(claims_dir, key: str) -> bool:
    """Claim ``key`` for this process; False when a live process holds it (or won the race)."""
    path = claim_path(claims_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = read_claim(path)
    if path.exists():
        if not claim_is_stale(owner):
            return False
        aside = path.with_name(f"{path.name}.stale.{os.getpid()}")
        try:
            os.rename(path, aside)  # only one process can move a given file away
        except FileNotFoundError:
            return False
        if not claim_is_stale(read_claim(aside)):  # a live claim slipped in between our read and the rename
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
            os.unlink(aside)
            return False
        os.unlink(aside)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, fh)
    return True


def release(claims_dir, key: str) -> None:
    """Remove this process's claim on ``key`` (another process's claim is left alone)."""
    path = claim_path(claims_dir, key)
    owner = read_claim(path)
    if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def live_claims(claims_dir) -> dict[str, dict]:
    """Key -> owner of every claim that is not stale (what is running now)."""
    root = Path(claims_dir)
    out = {}
    for path in sorted(root.rglob("*.claim")) if root.is_dir() else []:
        owner = read_claim(path)
        if owner is not None and not claim_is_stale(owner):
            out[str(path.relative_to(root).with_suffix(""))] = owner
    return out
