"""One file holds a trained model and everything needed to use it.

The file is a ``torch.save`` of plain containers (tensors, dicts, lists, strings, numbers), so it
loads with ``torch.load(..., weights_only=True)``: opening a model file never runs code from it.
It records the architecture, the label bins, the instrument profile, the preprocessing settings,
the training settings, package versions and a sha256 of the weights.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import platform
import time
from importlib import metadata
from pathlib import Path

import torch

from .binning import LabelBins
from .dataset import LABEL_NAMES
from .fileio import RemapDataError, atomic_write, require_nonempty
from .instruments import Instrument
from .model import DeepREMAP, ModelConfig
from .preprocess import continuum_normalize

FORMAT = "remap-model"
FORMAT_VERSION = 1


def _weights_sha256(state_dict: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def preprocessing_settings() -> dict:
    """The continuum-normalization defaults a model was trained with (spectra must match them)."""
    params = inspect.signature(continuum_normalize).parameters
    return {"continuum": {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty
                          and k not in ("ivar", "mask")}}


def save_model(path, model: DeepREMAP, bins: dict[str, LabelBins], instrument: Instrument,
               train_config: dict | None = None, label_stats=None, extra: dict | None = None) -> Path:
    """Write ``model`` and its context to ``path`` atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_config": model.config.to_dict(),
        "state_dict": state,
        "weights_sha256": _weights_sha256(state),
        "label_names": list(LABEL_NAMES),
        "bins": {name: b.to_dict() for name, b in bins.items()},
        "instrument": instrument.to_dict(),
        "preprocessing": preprocessing_settings(),
        "label_stats": None if label_stats is None else [list(map(float, s)) for s in label_stats],
        "train_config": train_config or {},
        "versions": {"python": platform.python_version(),
                     **{p: metadata.version(p) for p in ("remap", "torch", "numpy")}},
        "extra": extra or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_write(Path(path)) as fh:
        fh.write(buffer.getvalue())
    return Path(path)


def load_model(path, device="cpu") -> tuple[DeepREMAP, dict]:
    """Read a model file written by :func:`save_model`; returns ``(model in eval mode, info)``.

    ``info`` holds everything else in the file, with ``bins`` as :class:`LabelBins` and
    ``instrument`` as :class:`Instrument`. Errors name the file.
    """
    path = require_nonempty(path)
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a torch archive
        raise RemapDataError(path, f"not a remap model file (torch.load failed: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RemapDataError(path, "not a remap model file (no 'remap-model' format marker)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise RemapDataError(path, f"model format {payload['format_version']} is newer than this remap "
                             f"understands ({FORMAT_VERSION}); upgrade remap")
    if _weights_sha256(payload["state_dict"]) != payload["weights_sha256"]:
        raise RemapDataError(path, "weights do not match their recorded sha256: the file is corrupt")
    model = DeepREMAP(ModelConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    info = {k: v for k, v in payload.items() if k != "state_dict"}
    info["bins"] = {name: LabelBins.from_dict(d) for name, d in payload["bins"].items()}
    info["instrument"] = Instrument.from_dict(payload["instrument"])
    return model, info
