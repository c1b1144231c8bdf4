"""The machine-readable results: every number the validation, giant, baseline and ablation tables show.

Notebooks add their section with :func:`update_metrics`; the book's results chapter reads the same file.
The ``default`` profile writes ``results/metrics.json`` (the numbers of the rendered book); other
profiles write ``results/<profile>/metrics.json`` so a smoke test never overwrites them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from remap_lib.fileio import atomic_write
from remap_lib.paths import RESULTS_DIR


def metrics_path(profile: str = "default") -> Path:
    return RESULTS_DIR / "metrics.json" if profile == "default" else RESULTS_DIR / profile / "metrics.json"


def _plain(value):
    """JSON-safe copy: numpy scalars/arrays to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def load_metrics(profile: str = "default") -> dict:
    path = metrics_path(profile)
    return json.loads(path.read_text()) if path.exists() else {}


def update_metrics(section: str, values: dict, profile: str = "default") -> Path:
    """Replace ``section`` in the profile's metrics file (atomically), keeping the other sections."""
    path = metrics_path(profile)
    data = load_metrics(profile)
    data[section] = _plain(values)
    with atomic_write(path, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.write("\n")
    return path
