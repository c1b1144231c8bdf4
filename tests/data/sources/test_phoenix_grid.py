"""The FGK grid from PHOENIX, end to end on a loopback server: remap prepare --library phoenix, then remap train."""

from __future__ import annotations

import numpy as np
import pytest
from phoenixfake import serving, write_phoenix_like

from remap_lib.data.sources import phoenix as ph
from remap_lib.fileio import RemapDataError


def test_prepare_library_phoenix_then_train(tmp_path, monkeypatch, capsys):
    """End to end on a loopback server: download a few FGK nodes, degrade, write the set, pretrain on it."""
    from remap_lib.cli import main
    from remap_lib.data.dataset import read_dataset
    from remap_lib.data.sources.phoenix_grid import fgk_nodes, pick_nodes
    from remap_lib.nn.modelfile import load_model
    from remap_lib.spectra.instruments import Instrument

    nodes = pick_nodes(fgk_nodes(), 6, seed=3)
    assert len(fgk_nodes()) == 33 * 10 * 6 and all(n.alpha == 0 for n in nodes)
    write_phoenix_like(tmp_path / "server", nodes)
    # sharper than MILES, so that no MILES set is written: this test needs nothing but the server
    profile = Instrument("phx-test", 5100.0, 5600.0, medium="air", fwhm=1.0, pixel=0.4).to_yaml(tmp_path / "i.yaml")
    with serving(tmp_path / "server") as httpd:
        monkeypatch.setenv("REMAP_PHOENIX_URL", httpd.base_url)
        monkeypatch.setenv("REMAP_CACHE", str(tmp_path / "cache"))
        argv = ["prepare", "--library", "phoenix", "--instrument", str(profile), "--max-grid-spectra", "6",
                "--seed", "3", "--out", str(tmp_path / "work")]
        assert main(argv) == 0
        fetched = {r[0] for r in httpd.state["requests"]}
        assert fetched == {ph.WAVE_RELPATH} | {ph.phoenix_relpath(*n) for n in nodes}
        assert main(argv) == 0  # a rerun downloads nothing
        assert len(httpd.state["requests"]) == len(fetched)
    out = capsys.readouterr().out
    assert f"synthetic: {tmp_path / 'work' / 'synthetic.h5'}" in out and "miles:" not in out
    data = read_dataset(tmp_path / "work" / "synthetic.h5")
    assert len(data) == 6 and data.provenance["source"].startswith("PHOENIX-ACES-AGSS-COND-2011")
    np.testing.assert_array_equal(data.labels, [n[:3] for n in nodes])
    assert not data.mask.any() and np.median(data.flux) == pytest.approx(1.0, abs=0.01)
    # the 5171 Å vacuum line lands at its air wavelength (5169.56 Å), deeper in cooler stars
    line = np.argmin(data.flux[:, (data.wave > 5160) & (data.wave < 5180)], axis=1)
    np.testing.assert_allclose(data.wave[(data.wave > 5160) & (data.wave < 5180)][line], 5169.56, atol=0.4)
    depth = 1 - data.flux.min(axis=1)
    assert np.corrcoef(depth, -data.labels[:, 0])[0, 1] > 0.8
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "work" / "synthetic.h5"), "--out", str(run), "--epochs", "1",
                 "--batch-size", "4", "--stage-channels", "4,8", "--stem-channels", "4", "--embedding-dim", "4",
                 "--threads", "1", "--swa-start", "1.0", "--no-augment", "--no-progress"]) == 0
    _, info = load_model(run / "model.pt")
    assert info["instrument"].name == "phx-test"


def test_phoenix_grid_names_every_node_that_failed(tmp_path, monkeypatch):
    from remap_lib.data.sources.phoenix_grid import load_phoenix_grid

    nodes = [(5800.0, 4.5, 0.0, 0.0), (5900.0, 4.5, 0.0, 0.0)]
    write_phoenix_like(tmp_path / "server", nodes[:1])  # the second is not on the server
    with serving(tmp_path / "server") as httpd, pytest.raises(RemapDataError) as err:
        load_phoenix_grid(nodes, cache=tmp_path / "cache", base_url=httpd.base_url, progress=False)
    text = str(err.value)
    assert "1 of 2 PHOENIX nodes could not be fetched (rerun to resume)" in text
    assert "FAILED Teff=5900, log g=4.5, [M/H]=+0, [alpha/M]=+0: " in text and "404" in text
