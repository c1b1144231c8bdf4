"""Where remap keeps things: shipped data in the repository, generated files in ``work/``.

remap is used from a clone (``pip install -e .``): the shipped grid lives in ``data/`` beside the
package. ``$REMAP_WORK`` moves the generated training files; ``$REMAP_CACHE`` (see
:mod:`remap_lib.cache`) moves downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"


def work_dir(profile: str = "default") -> Path:
    """Folder for files the notebooks generate for one profile (training sets, models)."""
    root = Path(os.environ.get("REMAP_WORK") or REPO_ROOT / "work").expanduser()
    path = root / profile
    path.mkdir(parents=True, exist_ok=True)
    return path
