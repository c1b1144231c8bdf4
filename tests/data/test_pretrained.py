"""remap_lib.data.pretrained: the work folder's network first, else the shipped one; comparing the two."""

import pytest
import torch
from toydata import INSTRUMENT, TINY_ARCH

from remap_lib.data import pretrained
from remap_lib.fileio import RemapDataError
from remap_lib.nn.binning import DEFAULT_BINS
from remap_lib.nn.modelfile import save_model
from remap_lib.training.train import build_model


def _network(path, seed):
    torch.manual_seed(seed)
    return save_model(path, build_model(INSTRUMENT.wavelength_grid().size, DEFAULT_BINS, **TINY_ARCH), DEFAULT_BINS,
                      INSTRUMENT)


@pytest.fixture
def places(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", tmp_path / "shipped")
    (tmp_path / "work").mkdir()
    return tmp_path / "work", tmp_path / "shipped" / "toy"


def test_work_network_first_then_shipped_then_a_clear_error(places):
    work, shipped = places
    with pytest.raises(RemapDataError, match="no pretrained deep-remap network for profile 'toy'"):
        pretrained.find_pretrained("toy", work=work)
    assert pretrained.find_pretrained("toy", "mse", work=work, required=False) is None
    shipped.mkdir(parents=True)
    _network(shipped / "pretrained.pt", 0)
    assert pretrained.find_pretrained("toy", work=work).source == "shipped"
    _network(work / "pretrained.pt", 0)
    found = pretrained.find_pretrained("toy", work=work)
    assert found.source == "work" and "notebook 02" in found.describe()


def test_against_shipped_says_identical_or_how_far(places):
    work, shipped = places
    shipped.mkdir(parents=True)
    _network(shipped / "pretrained.pt", 0)
    _network(work / "pretrained.pt", 0)
    _network(work / "pretrained_mse.pt", 1)  # nothing shipped for it
    verdicts = pretrained.against_shipped("toy", work)
    assert verdicts["deep-remap"] == "identical weights"
    assert verdicts["mse"] == "the repository ships no pretrained mse network for the 'toy' profile"
    _network(work / "pretrained.pt", 1)
    assert pretrained.against_shipped("toy", work)["deep-remap"].startswith("different weights (largest difference")
