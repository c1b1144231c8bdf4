"""The one batched forward pass and ensemble mean, against the network called on the whole set at once."""

import numpy as np
import torch
from toydata import INSTRUMENT, TINY_ARCH

from remap_lib.constants import LABEL_NAMES
from remap_lib.evaluation.forward import ensemble_mean, forward
from remap_lib.evaluation.retrieval import nearest_reference_distance
from remap_lib.training.train import build_model


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model(INSTRUMENT.wavelength_grid().size, **TINY_ARCH).eval()


def test_batches_give_what_one_call_gives():
    model = _model()
    flux = np.random.default_rng(0).normal(1.0, 0.05, (7, INSTRUMENT.wavelength_grid().size)).astype(np.float32)
    mask = np.zeros_like(flux, dtype=bool)
    mask[2, :10] = True
    out = forward(model, flux, mask, batch_size=3)
    with torch.no_grad():
        whole = model(torch.as_tensor(flux), torch.as_tensor(mask))
    for name in LABEL_NAMES:
        assert torch.allclose(out["logits"][name], whole["logits"][name].float(), atol=1e-5)
    assert torch.allclose(out["embedding"], whole["embedding"].float(), atol=1e-5)


def test_no_spectra_give_empty_outputs_of_the_right_width():
    model = _model()
    out = forward(model, np.zeros((0, INSTRUMENT.wavelength_grid().size), np.float32))
    assert out["logits"]["teff"].shape == (0, model.config.head_bins["teff"])
    assert out["embedding"].shape == (0, model.config.embedding_dim)


def test_ensemble_mean_tempers_each_member_and_each_row():
    z = [{"teff": torch.tensor([[0.0, 1.0], [2.0, 0.0]])}, {"teff": torch.tensor([[1.0, 0.0], [0.0, 0.0]])}]
    temps = [{"teff": 2.0}, {}]
    got = ensemble_mean(z, temps, widen={"teff": [1.0, 3.0]})
    scale = torch.tensor([[1.0], [3.0]])
    want = (torch.softmax(z[0]["teff"] / (2.0 * scale), -1) + torch.softmax(z[1]["teff"] / scale, -1)) / 2
    assert np.allclose(got["teff"], want.numpy())


def test_nearest_reference_distance():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    e = np.array([[1.0, 0.0], [np.sqrt(0.5), np.sqrt(0.5)]], np.float32)
    assert np.allclose(nearest_reference_distance(e, ref, chunk_size=1), [0.0, np.sqrt(2 - np.sqrt(2))], atol=1e-3)
