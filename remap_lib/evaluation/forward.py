"""The one batched forward pass and the one ensemble mean, shared by evaluation, fine-tuning,
calibration, retrieval and inference.

:func:`forward` runs a network over spectra in batches and returns every head's logits and the
embedding as float32 CPU tensors; :func:`ensemble_mean` turns members' logits into the mean of
their tempered PMFs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from remap_lib.constants import LABEL_NAMES


def as_inputs(flux, mask=None) -> tuple[Tensor, Tensor]:
    """``flux`` as float32 and ``mask`` as bool tensors (no mask: nothing masked)."""
    flux = torch.as_tensor(np.asarray(flux, dtype=np.float32))
    mask = torch.zeros_like(flux, dtype=torch.bool) if mask is None else torch.as_tensor(np.asarray(mask, bool))
    return flux, mask


@torch.no_grad()
def forward(model, flux, mask=None, batch_size: int = 256, device="cpu") -> dict:
    """``{"logits": {label: (n, nbins)}, "embedding": (n, d)}`` of ``model`` over ``flux`` (n, npix).

    The model is put in eval mode (dropout off, BatchNorm on running statistics) on ``device``;
    the outputs are float32 tensors on the CPU, with zero rows when ``flux`` has none.
    """
    model = model.to(device).eval()
    flux, mask = as_inputs(flux, mask)
    logits: dict[str, list[Tensor]] = {}
    embeddings = []
    for i in range(0, len(flux), batch_size):
        out = model(flux[i:i + batch_size].to(device), mask[i:i + batch_size].to(device))
        for name, z in out["logits"].items():
            logits.setdefault(name, []).append(z.float().cpu())
        embeddings.append(out["embedding"].float().cpu())
    config = getattr(model, "config", None)
    if not embeddings:  # no spectra: empty outputs of the right widths
        head_bins = dict(getattr(config, "head_bins", {}))
        width = {n: (1 if getattr(config, "head", "") == "regression" else head_bins.get(n, 0)) for n in LABEL_NAMES}
        return {"logits": {n: torch.zeros((0, width[n])) for n in LABEL_NAMES},
                "embedding": torch.zeros((0, getattr(config, "embedding_dim", 0)))}
    return {"logits": {name: torch.cat(z) for name, z in logits.items()}, "embedding": torch.cat(embeddings)}


def ensemble_mean(member_logits: Sequence[Mapping[str, Tensor]], temperatures=None,
                  widen: Mapping[str, object] | None = None) -> dict[str, np.ndarray]:
    """Mean over members of softmax(logits / T) per label: ``{label: (n, nbins)}`` float32.

    ``temperatures``: per member a ``{label: T}`` (missing: 1); ``widen`` ``{label: (n,)}`` multiplies
    each row's temperature (partial coverage; None: 1).
    """
    total: dict[str, Tensor] = {}
    for k, logits in enumerate(member_logits):
        temps = (temperatures[k] if temperatures is not None else None) or {}
        for name, z in logits.items():
            t = float(temps.get(name, 1.0))
            if widen is not None and name in widen:
                t = t * torch.as_tensor(np.asarray(widen[name], dtype=np.float32))[:, None]
            p = torch.softmax(torch.as_tensor(z).float() / t, dim=-1)
            total[name] = p if k == 0 else total[name] + p
    return {name: (p / len(member_logits)).numpy() for name, p in total.items()}
