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

from remap_lib.constants import LABEL_NAMES
from remap_lib.fileio import RemapDataError, atomic_write, require_nonempty
from remap_lib.nn.binning import LabelBins
from remap_lib.nn.model import DeepREMAP, ModelConfig
from remap_lib.spectra.instruments import Instrument
from remap_lib.spectra.preprocess import continuum_normalize

FORMAT = "remap-model"
FORMAT_VERSION = 1


def weights_sha256(state_dict: dict) -> str:
    """sha256 of a state dict's tensors in key order: what a model file records, and what a training
    checkpoint's fingerprint compares (:func:`remap_lib.training.fingerprint.training_fingerprint`)."""
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


def package_versions() -> dict:
    return {"python": platform.python_version(), **{p: metadata.version(p) for p in ("remap", "torch", "numpy")}}


def _write_payload(path, payload: dict) -> Path:
    """``torch.save`` of plain containers, written atomically (a crash leaves the old file or none)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_write(Path(path)) as fh:
        fh.write(buffer.getvalue())
    return Path(path)


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
        "weights_sha256": weights_sha256(state),
        "label_names": list(LABEL_NAMES),
        "bins": {name: b.to_dict() for name, b in bins.items()},
        "instrument": instrument.to_dict(),
        "preprocessing": preprocessing_settings(),
        "label_stats": None if label_stats is None else [list(map(float, s)) for s in label_stats],
        "train_config": train_config or {},
        "versions": package_versions(),
        "extra": extra or {},
    }
    return _write_payload(path, payload)


def load_model(path, device="cpu") -> tuple[DeepREMAP, dict]:
    """Read a model file written by :func:`save_model`; returns ``(model in eval mode, info)``.

    ``info`` holds everything else in the file, with ``bins`` as :class:`LabelBins` and
    ``instrument`` as :class:`Instrument`. Errors name the file.
    """
    payload = _read_payload(path)
    if payload["format"] != FORMAT:
        raise RemapDataError(path, "this is an ensemble file: read it with remap_lib.nn.modelfile.load_members")
    return _model_from_payload(payload, path, device)


# -- an ensemble in one file -------------------------------------------------------------------------
ENSEMBLE_FORMAT = "remap-ensemble"
ENSEMBLE_FORMAT_VERSION = 1


def _read_payload(path) -> dict:
    path = require_nonempty(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a torch archive
        raise RemapDataError(path, f"not a remap model file (torch.load failed: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, ENSEMBLE_FORMAT):
        raise RemapDataError(path, "not a remap model file (no 'remap-model' or 'remap-ensemble' format marker)")
    return payload


def save_ensemble(path, member_files, reference: dict | None = None, extra: dict | None = None) -> Path:
    """Bundle calibrated member files (each as written by :func:`save_model`) into one file.

    ``reference`` holds what out-of-domain checks need: ``embedding`` (n, d) of the training spectra
    from member 0, their ``ids`` and ``labels``, and the distance ``threshold`` above which an input
    is flagged. Each member keeps its own weights checksum; the bundle is written atomically.
    """
    members = []
    for f in member_files:
        payload = _read_payload(f)
        if payload["format"] != FORMAT:
            raise RemapDataError(f, "an ensemble member must be a single-model file, not an ensemble")
        _model_from_payload(payload, f, "cpu")  # validates version, completeness and checksum before bundling
        members.append(payload)
    if not members:
        raise ValueError("an ensemble needs at least one member file")
    payload = {
        "format": ENSEMBLE_FORMAT,
        "format_version": ENSEMBLE_FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "members": members,
        "reference": reference or {},
        "versions": package_versions(),
        "extra": extra or {},
    }
    return _write_payload(path, payload)


def _model_from_payload(payload: dict, path, device) -> tuple[DeepREMAP, dict]:
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise RemapDataError(path, f"model format {payload['format_version']} is newer than this remap "
                             f"understands ({FORMAT_VERSION}); upgrade remap")
    missing = [k for k in ("model_config", "state_dict", "weights_sha256", "bins", "instrument") if k not in payload]
    if missing:
        raise RemapDataError(path, f"incomplete remap model file: missing {missing}")
    if weights_sha256(payload["state_dict"]) != payload["weights_sha256"]:
        raise RemapDataError(path, "weights do not match their recorded sha256: the file is corrupt")
    try:
        model = DeepREMAP(ModelConfig.from_dict(payload["model_config"]))
        model.load_state_dict(payload["state_dict"])
    except (TypeError, RuntimeError, KeyError) as err:
        raise RemapDataError(path, f"model file is incompatible with this remap version ({err})") from err
    model.to(device).eval()
    info = {k: v for k, v in payload.items() if k != "state_dict"}
    info["bins"] = {name: LabelBins.from_dict(d) for name, d in payload["bins"].items()}
    info["instrument"] = Instrument.from_dict(payload["instrument"])
    return model, info


def load_members(path, device="cpu") -> tuple[list[tuple[DeepREMAP, dict]], dict]:
    """Every network in a model file (one for :func:`save_model` files, K for ensembles).

    Returns ``([(model, info), ...], bundle)`` where ``bundle`` holds the ensemble's ``reference``,
    ``versions`` and ``extra`` (empty for a single-model file). All members must share bins and
    instrument, or the file is rejected.
    """
    payload = _read_payload(path)
    if payload["format"] == FORMAT:
        model, info = _model_from_payload(payload, path, device)
        return [(model, info)], {"reference": {}, "versions": info.get("versions", {}), "extra": {}}
    if payload.get("format_version", 0) > ENSEMBLE_FORMAT_VERSION:
        raise RemapDataError(path, f"ensemble format {payload['format_version']} is newer than this remap "
                             f"understands ({ENSEMBLE_FORMAT_VERSION}); upgrade remap")
    members = [_model_from_payload(m, path, device) for m in payload.get("members", [])]
    if not members:
        raise RemapDataError(path, "ensemble file holds no members")
    first = members[0][1]
    for _, info in members[1:]:
        if info["instrument"].to_dict() != first["instrument"].to_dict() or \
                {k: b.to_dict() for k, b in info["bins"].items()} != {k: b.to_dict() for k, b in first["bins"].items()}:
            raise RemapDataError(path, "ensemble members disagree on instrument or label bins")
    bundle = {k: payload.get(k, {}) for k in ("reference", "versions", "extra", "created")}
    return members, bundle
