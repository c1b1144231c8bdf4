"""Downloading the PHOENIX grid: resumable, checked, atomic.

Files go to ``cache_dir()/phoenix/<the server's relative path>``
(:func:`~remap_lib.data.sources.phoenix.phoenix_cache_path`), through a ``.part`` file that is resumed
with HTTP Range requests, checked (size, optional sha256, readable FITS of the right length and labels,
:mod:`remap_lib.data.sources.phoenix_read`) and only then renamed into place, so the cache never holds
a bad file. Transient failures (dropped connections, short bodies, 5xx) are retried with backoff; a
404 fails at once.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from remap_lib.data.sources.phoenix import (
    WAVE_RELPATH,
    PhoenixNode,
    node_text,
    phoenix_cache_path,
    phoenix_relpath,
    phoenix_url,
    validate_node,
)
from remap_lib.data.sources.phoenix_read import read_flux, read_wave, read_wave_uncached
from remap_lib.fileio import RemapDataError, verify_sha256

__all__ = ["GridFetchSummary", "download_phoenix", "download_wave", "fetch_phoenix_grid"]


class _Retryable(Exception):
    """A transient failure: dropped connection, short body, 5xx."""


class _RestartFromZero(_Retryable):
    pass


_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_USER_AGENT = "remap-phoenix/0.1 (+python urllib)"


def _fetch_once(url: str, part: Path, timeout: float, progress: bool, desc: str) -> int | None:
    """One HTTP attempt, appending to ``part`` from its current size. Returns the expected total."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            m = re.match(r"bytes\s+\*/(\d+)", err.headers.get("Content-Range", "") or "")
            err.close()
            if m and int(m.group(1)) == offset:
                return offset  # the .part is already complete
            part.unlink(missing_ok=True)
            raise _RestartFromZero(f"server refused Range bytes={offset}- (416); restarting") from err
        err.close()
        if err.code in (408, 429) or err.code >= 500:
            raise _Retryable(f"HTTP {err.code} {err.reason}") from err
        raise
    with resp:
        status = resp.status
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            m = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", "") or "")
            if not m or int(m.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise _RestartFromZero(f"unexpected Content-Range {resp.headers.get('Content-Range')!r} "
                                       f"for Range bytes={offset}-; restarting")
            total = int(m.group(3)) if m.group(3) != "*" else None
            end = int(m.group(2)) + 1
            if length is not None and length != end - offset:
                raise _Retryable(f"Content-Length {length} disagrees with Content-Range "
                                       f"{resp.headers.get('Content-Range')!r}")
            mode = "ab"
        elif status == 200:
            offset, total, mode = 0, length, "wb"  # a server ignoring Range: start again from zero
        else:
            raise _Retryable(f"unexpected HTTP status {status}")
        got = offset
        with open(part, mode) as fh, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=desc, disable=not progress,
                                          leave=False) as bar:
            while True:
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                fh.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
                if total is not None and got > total:
                    break
            fh.flush()
            os.fsync(fh.fileno())
    if total is not None and got != total:
        if got > total:
            part.unlink(missing_ok=True)
            raise _RestartFromZero(f"received {got} bytes, more than the {total} announced; restarting")
        raise _Retryable(f"connection dropped after {got} of {total} bytes")
    return total


_TRANSIENT = (_Retryable, urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout,
              http.client.HTTPException, OSError)


def _download(url: str, dest: Path, *, validate, retries: int, backoff: float, timeout: float,
              expected_sha256: str | None, progress: bool) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` with resume, retries and checks."""
    if dest.exists():
        if expected_sha256:
            verify_sha256(dest, expected_sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    retries = max(0, int(retries))
    last: BaseException | None = None
    total = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            total = _fetch_once(url, part, timeout, progress, dest.name)
            last = None
            break
        except urllib.error.HTTPError as err:  # non-transient HTTP error: no retries
            if err.code == 404:
                raise RemapDataError(url, "HTTP 404 Not Found: no such file on the server "
                                          "(check the grid node and the base URL)") from err
            raise RemapDataError(url, f"HTTP {err.code} {err.reason}") from err
        except _TRANSIENT as err:
            last = err
    if last is not None:
        kept = part.exists() and part.stat().st_size > 0
        raise RemapDataError(url, f"download failed after {retries + 1} attempts: {last}"
                             + (f" (partial file kept for resume: {part})" if kept else "")) from last
    try:
        size = part.stat().st_size if part.exists() else 0
        if total is not None and size != total:
            raise RemapDataError(url, f"downloaded {size} bytes, server announced {total}")
        if expected_sha256:
            verify_sha256(part, expected_sha256)
        validate(part)
    except RemapDataError as err:
        part.unlink(missing_ok=True)
        raise RemapDataError(url, f"corrupt download, deleted: {err.problem}") from err
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def _wave_validator(url: str, expected_npix: int | None):
    def validate(part: Path) -> None:
        wave = read_wave_uncached(part, source=url)
        if expected_npix is not None and wave.size != expected_npix:
            raise RemapDataError(url, f"wavelength grid has {wave.size} pixels, expected {expected_npix}")
    return validate


def download_wave(cache=None, base_url=None, retries: int = 4, backoff: float = 0.5, timeout: float = 30,
                  expected_sha256: str | None = None, progress: bool = True,
                  expected_npix: int | None = None) -> Path:
    """Download (once) ``HiResFITS/WAVE_PHOENIX-ACES-AGSS-COND-2011.fits`` into the cache.

    ``expected_npix`` (e.g. :data:`HIRES_NPIX`) additionally checks the length; by default any
    1-D, finite, strictly increasing grid is accepted.
    """
    url = phoenix_url(WAVE_RELPATH, base_url)
    dest = phoenix_cache_path(WAVE_RELPATH, cache)
    return _download(url, dest, validate=_wave_validator(url, expected_npix), retries=retries,
                     backoff=backoff, timeout=timeout, expected_sha256=expected_sha256, progress=progress)


def download_phoenix(teff, logg, monh, alpha=0.0, cache=None, base_url=None, retries: int = 4,
                     backoff: float = 0.5, timeout: float = 30, expected_sha256: str | None = None,
                     progress: bool = True, *, wave_path=None) -> Path:
    """Download (once) one HiRes spectrum into ``<cache>/phoenix/<server path>``; return its path.

    Partial downloads resume with HTTP Range; transient failures (dropped connections, timeouts,
    5xx) are retried ``retries`` times with exponential backoff ``backoff * 2**k`` s; 404 and other
    4xx fail at once. The finished file must match Content-Length/Content-Range, ``expected_sha256``
    when given, and be a readable FITS whose length equals the wavelength grid (``wave_path``, by
    default the cached WAVE file, downloaded first) and whose header labels equal the node;
    otherwise it is deleted and :class:`RemapDataError` is raised.
    """
    node = validate_node(teff, logg, monh, alpha)
    relpath = phoenix_relpath(*node)
    url = phoenix_url(relpath, base_url)
    dest = phoenix_cache_path(relpath, cache)
    if dest.exists() and not expected_sha256:
        return dest
    if wave_path is None:
        wave_path = download_wave(cache=cache, base_url=base_url, retries=retries, backoff=backoff,
                                  timeout=timeout, progress=progress)
    npix = read_wave(wave_path).size

    def validate(part: Path) -> None:
        read_flux(part, source=url, npix_expected=npix, expected=node, sl=None)

    return _download(url, dest, validate=validate, retries=retries, backoff=backoff, timeout=timeout,
                     expected_sha256=expected_sha256, progress=progress)


@dataclass
class GridFetchSummary:
    """What :func:`fetch_phoenix_grid` did."""

    downloaded: list[Path] = field(default_factory=list)
    cached: list[Path] = field(default_factory=list)
    failed: list[tuple[PhoenixNode, str]] = field(default_factory=list)
    wave: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def paths(self) -> list[Path]:
        return self.cached + self.downloaded

    def __str__(self) -> str:
        lines = [f"PHOENIX grid: {len(self.downloaded)} downloaded, {len(self.cached)} already cached, "
                 f"{len(self.failed)} failed"]
        lines += [f"  FAILED {node_text(n)}: {msg}" for n, msg in self.failed]
        return "\n".join(lines)


def _as_node(item) -> PhoenixNode:
    if isinstance(item, dict):
        return validate_node(item["teff"], item["logg"], item["monh"], item.get("alpha", 0.0))
    return validate_node(*item)


def fetch_phoenix_grid(nodes: Iterable, cache=None, base_url=None, retries: int = 4, backoff: float = 0.5,
                       timeout: float = 30, progress: bool = True, keep_going: bool = True,
                       sha256: dict | None = None) -> GridFetchSummary:
    """Download many nodes (tuples ``(teff, logg, monh[, alpha])`` or dicts).

    All nodes are validated before anything is fetched (ValueError). Each file resumes on its own
    from its ``.part``; with ``keep_going`` a failing node is recorded in the summary and the rest
    continue, otherwise the first failure is raised. ``sha256`` optionally maps server relative
    paths to expected hashes. Rerunning after an interruption only fetches what is missing.
    """
    todo = list(dict.fromkeys(_as_node(n) for n in nodes))
    summary = GridFetchSummary()
    summary.wave = download_wave(cache=cache, base_url=base_url, retries=retries, backoff=backoff,
                                 timeout=timeout, progress=progress)
    sha256 = sha256 or {}
    for node in tqdm(todo, desc="PHOENIX grid", unit="file", disable=not progress):
        relpath = phoenix_relpath(*node)
        dest = phoenix_cache_path(relpath, cache)
        if dest.exists():
            summary.cached.append(dest)
            continue
        try:
            path = download_phoenix(*node, cache=cache, base_url=base_url, retries=retries, backoff=backoff,
                                    timeout=timeout, expected_sha256=sha256.get(relpath), progress=progress,
                                    wave_path=summary.wave)
        except RemapDataError as err:
            if not keep_going:
                raise
            summary.failed.append((node, str(err)))
            continue
        summary.downloaded.append(path)
    return summary
