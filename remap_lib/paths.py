"""Where remap keeps things, in a clone and in an installed package.

Predicting needs only the package: the shipped model lives inside it (``remap_lib/models``). The
rest of the method reads files that live in the repository beside the package: the synthetic grid,
the pretrained networks and the committed splits (``data/``), the notebooks and the results. Those
paths are defined here once; :func:`repo_file` turns a missing one into a clear message instead of
a failure on a path (an installed package is not a clone).

``$REMAP_WORK`` moves the generated training files (default: ``work/`` in a clone, else ``./work``
in the current folder); ``$REMAP_CACHE`` (see :mod:`remap_lib.data.cache`) moves downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

from remap_lib.fileio import RemapDataError

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
#: The committed measurements (JSON reports, study records) that the book, README and notes quote.
RESULTS_DIR = REPO_ROOT / "results"
#: True when the package is used from a clone of the repository (``pip install -e .``), where the
#: data, notebooks and results sit beside it; False for a package installed from a wheel.
IN_CLONE = (REPO_ROOT / "pyproject.toml").is_file() and (DATA_DIR / "MANIFEST.sha256").is_file()
CLONE_HINT = "it ships with the remap repository, not with the installed package: work in a clone (`git clone` the " \
             "repository, then `make install` or `pip install -e .` there)"


def repo_file(path, what: str) -> Path:
    """``path`` if it exists; else an error that names it and says whether a clone is what is missing."""
    path = Path(path)
    if path.exists():
        return path
    if not IN_CLONE and path.resolve().is_relative_to(REPO_ROOT):
        raise RemapDataError(path, f"{what} not found: {CLONE_HINT}")
    raise RemapDataError(path, f"{what} not found")


def work_dir(profile: str = "default") -> Path:
    """Folder for files the notebooks generate for one profile (training sets, models)."""
    default = REPO_ROOT / "work" if IN_CLONE else Path.cwd() / "work"
    root = Path(os.environ.get("REMAP_WORK") or default).expanduser()
    path = root / profile
    path.mkdir(parents=True, exist_ok=True)
    return path
