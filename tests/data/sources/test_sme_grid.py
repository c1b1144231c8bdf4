"""remap_lib.data.sources.sme_grid: the resumable grid build, on 3 nodes and a 16 Å window.

Most tests replace PySME by a cheap fake (a Gaussian line whose depth depends on Teff) so they
test the bookkeeping: resuming, never recomputing a node, ignoring half-written files, refusing
mixed settings, the manifest. One test runs real PySME on the same 3 nodes (about 3 s).
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from remap_lib.data.cache import GES_LINELIST_ARCHIVE
from remap_lib.data.sources import sme_grid
from remap_lib.data.sources.marcs import MarcsModel
from remap_lib.data.sources.sme import SynthesisSettings
from remap_lib.data.sources.sme_grid import assemble_grid, build_grid, node_key, pending_nodes, verify_manifest
from remap_lib.fileio import RemapDataError
from remap_lib.spectra.instruments import C_KMS, Instrument

SETTINGS = SynthesisSettings(wave_min=4998.0, wave_max=5014.0)
# stored window 3-4 Å inside the synthesis window, so the LSF has data at the edges
STORAGE = Instrument("TEST-R11000", 5002.0, 5010.0, medium="air", resolution=11000.0,
                     velocity_pixel=C_KMS / 11000.0 / 4)


def _model(teff, logg, monh):
    return MarcsModel(name=f"fake_{teff:.0f}_{logg}_{monh}", teff=teff, logg=logg, monh=monh, alpha=0.0,
                      vmicro=1.0, spherical=False, gap_filled=False, text="")


NODES = [_model(5000.0, 4.5, 0.0), _model(5750.0, 4.5, 0.0), _model(6500.0, 4.0, -1.0)]


def fake_synthesize(model, settings):
    wave = np.arange(settings.wave_min, settings.wave_max, 0.01)
    depth = 0.2 + 0.5 * (7000.0 - model.teff) / 3000.0
    flux = 1.0 - depth * np.exp(-0.5 * ((wave - 5006.0) / 0.05) ** 2)
    return wave, flux, np.ones_like(wave)


@pytest.fixture
def fake(monkeypatch):
    """Fake PySME, and count the nodes synthesized."""
    calls = []
    real_node = sme_grid.synthesize_node

    def spy(model, *args, **kwargs):
        calls.append(model.name)
        return real_node(model, *args, **kwargs)

    monkeypatch.setattr(sme_grid, "synthesize", fake_synthesize)
    monkeypatch.setattr(sme_grid, "synthesize_node", spy)
    return calls


def _build(tmp_path, nodes=NODES, settings=SETTINGS, storage=STORAGE, **kw):
    return build_grid(output=tmp_path / "grid.h5", workdir=tmp_path / "work", nodes=nodes, settings=settings,
                      workers=1, progress=False, storage=storage, **kw)


def _node_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "work").glob("*.npz"))


def test_node_key():
    assert node_key(NODES[0]) == "t05000_g+4.50_m+0.00"
    assert node_key(NODES[2]) == "t06500_g+4.00_m-1.00"


def test_limit_then_resume_never_recomputes(tmp_path, fake):
    # (1) one node, then stop: no grid yet
    assert _build(tmp_path, limit=1) is None
    assert _node_files(tmp_path) == ["t05000_g+4.50_m+0.00.npz"]
    assert fake == ["fake_5000_4.5_0.0"]
    assert not (tmp_path / "grid.h5").exists()
    first = tmp_path / "work" / "t05000_g+4.50_m+0.00.npz"
    stamp = (first.stat().st_ino, first.stat().st_mtime_ns)
    assert [m.name for m in pending_nodes(NODES, tmp_path / "work")] == ["fake_5750_4.5_0.0", "fake_6500_4.0_-1.0"]

    # (2) the rerun does only the two missing nodes and assembles the grid
    out = _build(tmp_path)
    assert out == tmp_path / "grid.h5" and out.exists()
    assert fake == ["fake_5000_4.5_0.0", "fake_5750_4.5_0.0", "fake_6500_4.0_-1.0"]
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == stamp
    assert len(_node_files(tmp_path)) == 3

    # a third run synthesizes nothing and still returns the grid
    assert _build(tmp_path) == out
    assert len(fake) == 3
    with h5py.File(out) as h5:
        np.testing.assert_array_equal(h5["labels"][:], [[5000, 4.5, 0], [5750, 4.5, 0], [6500, 4.0, -1]])
        np.testing.assert_array_equal(h5["wave"][:], STORAGE.wavelength_grid())
        flux = h5["flux"][:]
        # deeper fake line for cooler stars, continuum 1, stored to 1e-4
        depths = 1 - flux.min(axis=1)
        assert depths[0] > depths[1] > depths[2] > 0.05
        np.testing.assert_allclose(flux[:, [0, -1]], 1.0, atol=1e-4)
    assert not list(tmp_path.glob("work/*.part")) and not list(tmp_path.glob(".*.part"))


def test_stray_partial_file_is_ignored(tmp_path, fake):
    workdir = tmp_path / "work"
    workdir.mkdir()
    stray = workdir / ".t05000_g+4.50_m+0.00.npz.k3j_x9.part"
    stray.write_bytes(b"PK\x03\x04 half a zip")  # a worker killed mid-write
    assert [m.name for m in pending_nodes(NODES, workdir)][0] == "fake_5000_4.5_0.0"
    assert _build(tmp_path) == tmp_path / "grid.h5"
    assert "fake_5000_4.5_0.0" in fake
    with np.load(workdir / "t05000_g+4.50_m+0.00.npz") as part:
        assert str(part["name"]) == "fake_5000_4.5_0.0" and np.isfinite(part["flux"]).all()


def test_other_settings_refused(tmp_path, fake):
    assert _build(tmp_path, limit=1) is None
    record = tmp_path / "work" / "settings.json"
    assert json.loads(record.read_text()) == {"synthesis": SETTINGS.to_dict(), "storage": STORAGE.to_dict()}
    looser = SynthesisSettings(wave_min=4998.0, wave_max=5014.0, accrt=1e-2)
    with pytest.raises(RemapDataError, match="settings.json: work folder was started with other settings"):
        _build(tmp_path, settings=looser)
    other_storage = Instrument("TEST-R5000", 5002.0, 5010.0, medium="air", resolution=5000.0, velocity_pixel=15.0)
    with pytest.raises(RemapDataError, match="other settings"):
        _build(tmp_path, storage=other_storage)
    assert fake == ["fake_5000_4.5_0.0"]  # nothing computed by the refused runs
    # the same settings are accepted again
    assert _build(tmp_path) is not None


def test_manifest_detects_changes(tmp_path, fake):
    out = _build(tmp_path)
    manifest = tmp_path / "MANIFEST.sha256"
    digest, name = manifest.read_text().split()
    assert name == "grid.h5" and len(digest) == 64
    verify_manifest(manifest)
    # another file listed before is kept when the grid is rewritten
    extra = tmp_path / "extra.txt"
    extra.write_text("x")
    sme_grid.write_manifest([extra], manifest)
    assert [line.split()[1] for line in manifest.read_text().splitlines()] == ["extra.txt", "grid.h5"]
    with open(out, "r+b") as fh:
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 0xFF]))
    with pytest.raises(RemapDataError, match=r"grid.h5: sha256 [0-9a-f]{64} differs from MANIFEST.sha256"):
        verify_manifest(manifest)
    out.unlink()
    with pytest.raises(RemapDataError, match="grid.h5: listed in MANIFEST.sha256 but missing"):
        verify_manifest(manifest)


def test_assemble_refuses_bad_node_files(tmp_path, fake):
    assert _build(tmp_path, limit=3) is not None
    work = tmp_path / "work"
    np.savez(work / "t05750_g+4.50_m+0.00.npz", flux=np.full(STORAGE.npix, np.nan, np.float32),
             seconds=1.0, name="x")
    with pytest.raises(RemapDataError, match="non-finite flux"):
        assemble_grid(NODES, work, tmp_path / "bad.h5", SETTINGS, STORAGE)
    (work / "t05750_g+4.50_m+0.00.npz").write_bytes(b"junk")
    with pytest.raises(RemapDataError, match="t05750_g\\+4.50_m\\+0.00.npz: unreadable node file"):
        assemble_grid(NODES, work, tmp_path / "bad.h5", SETTINGS, STORAGE)
    assert not (tmp_path / "bad.h5").exists()


@pytest.fixture(scope="module")
def real_nodes():
    from remap_lib.data.sources.marcs import find_model
    try:
        return [find_model(5750.0, 4.5, 0.0), find_model(4500.0, 1.5, -1.0), find_model(6500.0, 4.0, -0.5)]
    except (RemapDataError, OSError) as err:
        pytest.skip(f"MARCS atmospheres not available: {err}")


def test_real_pysme_grid(tmp_path, real_nodes):
    out = _build(tmp_path, nodes=real_nodes)
    with h5py.File(out) as h5:
        np.testing.assert_array_equal(h5["labels"][:], [[5750, 4.5, 0], [4500, 1.5, -1.0], [6500, 4.0, -0.5]])
        assert list(h5["labels"].attrs["names"]) == ["teff", "logg", "monh"]
        assert [m.decode() for m in h5["model"][:]] == [m.name for m in real_nodes]
        flux = h5["flux"][:]
        assert flux.shape == (3, STORAGE.npix)
        assert np.isfinite(flux).all() and not np.isnan(flux).any()
        assert flux.min() > 0.0 and flux.max() <= 1.01
        assert (h5["seconds"][:] > 0).all()
        assert h5.attrs["medium"] == "air" and h5.attrs["resolution"] == 11000.0
        prov = json.loads(h5.attrs["provenance"])
    assert prov["versions"]["pysme-astro"] == "1.2.0"
    assert set(prov["versions"]) >= {"numpy", "scipy", "astropy"}
    assert prov["linelist"]["archive_sha256"] == GES_LINELIST_ARCHIVE.sha256
    assert prov["synthesis"] == SETTINGS.to_dict()
    assert prov["storage"] == STORAGE.to_dict()
    verify_manifest(tmp_path / "MANIFEST.sha256")
