"""A tiny calibrated ensemble on the toy instrument, for the prediction and streaming tests."""

import torch
from toydata import INSTRUMENT, TINY_ARCH

from remap_lib.nn.binning import DEFAULT_BINS
from remap_lib.nn.model import DeepREMAP, ModelConfig
from remap_lib.nn.modelfile import save_ensemble, save_model

TEMPERATURES = ({"teff": 1.5, "logg": 1.2, "feh": 0.8}, {"teff": 1.0, "logg": 2.0, "feh": 1.1})


def toy_members(folder, seed=0):
    """Two untrained member files with temperatures (fixed seed: the same weights every call)."""
    torch.manual_seed(seed)
    paths = []
    for k, temps in enumerate(TEMPERATURES):
        model = DeepREMAP(ModelConfig(npix=INSTRUMENT.wavelength_grid().size, **TINY_ARCH)).eval()
        paths.append(save_model(folder / f"member_{k}.pt", model, DEFAULT_BINS, INSTRUMENT,
                                extra={"temperatures": temps}))
    return paths


def toy_ensemble(folder, threshold=0.5, seed=0):
    """An ensemble file whose out-of-domain reference is 16 random unit vectors."""
    gen = torch.Generator().manual_seed(seed + 1)
    reference = {"embedding": torch.nn.functional.normalize(torch.randn(16, TINY_ARCH["embedding_dim"],
                                                                        generator=gen), dim=1),
                 "threshold": threshold}
    return save_ensemble(folder / "ensemble.pt", toy_members(folder, seed), reference=reference)


class ConstantLogits(torch.nn.Module):
    """A network whose logits are the same for every spectrum: ``{label: logits}`` per row, so that
    ensemble PMFs and the numbers scored from them can be worked out by hand."""

    def __init__(self, logits: dict):
        super().__init__()
        self.fixed = {name: torch.as_tensor(z, dtype=torch.float32) for name, z in logits.items()}

    def forward(self, flux, mask=None):
        n = len(flux)
        return {"logits": {name: z.expand(n, -1) for name, z in self.fixed.items()},
                "embedding": torch.zeros((n, 2))}
