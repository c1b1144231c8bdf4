"""Downloading PHOENIX files from a loopback server: resume, retries, checks, the grid summary."""

from __future__ import annotations

import hashlib

import pytest
from phoenixfake import FAST, NODES, NPIX, requests_for, write_flux

from remap_lib.data.sources import phoenix as ph
from remap_lib.data.sources import phoenix_fetch, phoenix_read
from remap_lib.fileio import RemapDataError


def _leave_part(server_root, cache, node, content=None):
    """A ``.part`` file in ``cache`` as an earlier run leaves it: ``content`` (default the whole file)."""
    rel = ph.phoenix_relpath(*node)
    original = (server_root / rel).read_bytes()
    part = cache / "phoenix" / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(original if content is None else content(original))
    return rel, original, part


def test_download_and_cache_layout(server, server_root, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[1]
    rel = ph.phoenix_relpath(*node)
    path = phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert path == cache / "phoenix" / rel
    assert "Z+0.5" in str(path)
    assert path.read_bytes() == (server_root / rel).read_bytes()
    assert (cache / "phoenix" / ph.WAVE_RELPATH).read_bytes() == (server_root / ph.WAVE_RELPATH).read_bytes()
    assert not list(cache.rglob("*.part"))
    assert phoenix_read.read_phoenix(path, cache / "phoenix" / ph.WAVE_RELPATH).labels == node
    n = len(server.state["requests"])
    assert phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST) == path
    assert len(server.state["requests"]) == n  # cached: nothing fetched


def test_env_overrides(server, server_root, tmp_path, monkeypatch):
    monkeypatch.setenv("REMAP_PHOENIX_URL", server.base_url.rstrip("/"))
    monkeypatch.setenv("REMAP_CACHE", str(tmp_path / "envcache"))
    assert ph.phoenix_base_url() == server.base_url
    path = phoenix_fetch.download_phoenix(*NODES[2], **FAST)
    assert path == tmp_path / "envcache" / "phoenix" / ph.phoenix_relpath(*NODES[2])
    assert "Z-1.0.Alpha=+0.20" in str(path)


def test_dropped_connection_resumes_with_range(server, server_root, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    server.state["faults"][rel] = "drop_first"
    path = phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    original = (server_root / rel).read_bytes()
    assert path.read_bytes() == original
    reqs = requests_for(server, rel)
    assert len(reqs) == 2
    assert reqs[0][1] is None
    assert reqs[1][1] is not None and reqs[1][1].startswith("bytes=")
    start = int(reqs[1][1].split("=")[1].rstrip("-"))
    assert 0 < start < len(original)
    assert not list(cache.rglob("*.part"))


def test_resume_from_part_left_by_earlier_run(server, server_root, tmp_path):
    cache, node = tmp_path / "cache", NODES[0]
    rel, original, part = _leave_part(server_root, cache, node, lambda full: full[:12345])
    path = phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert path.read_bytes() == original
    assert requests_for(server, rel) == [(rel, "bytes=12345-")]
    assert not part.exists()


def test_complete_part_answered_416(server, server_root, tmp_path):
    cache, node = tmp_path / "cache", NODES[0]
    rel, original, part = _leave_part(server_root, cache, node)
    path = phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert path.read_bytes() == original
    assert requests_for(server, rel) == [(rel, f"bytes={len(original)}-")]


def test_server_ignoring_range_restarts_from_zero(server, server_root, tmp_path):
    cache, node = tmp_path / "cache", NODES[0]
    # a part that would corrupt the file if appended to
    rel, original, part = _leave_part(server_root, cache, node, lambda full: b"X" * 5000)
    server.state["faults"][rel] = "ignore_range"
    path = phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert path.read_bytes() == original
    assert requests_for(server, rel) == [(rel, "bytes=5000-")]


def test_5xx_is_retried(server, server_root, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    server.state["faults"][rel] = "500_once"
    path = phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert path.read_bytes() == (server_root / rel).read_bytes()
    assert len(requests_for(server, rel)) == 2


def test_404_fails_at_once(server, tmp_path):
    cache = tmp_path / "cache"
    node = (6000, 4.0, -2.0, 0.0)  # valid node, not on this server
    rel = ph.phoenix_relpath(*node)
    with pytest.raises(RemapDataError, match="404") as err:
        phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert err.value.source == ph.phoenix_url(rel, server.base_url)
    assert rel in str(err.value)
    assert len(requests_for(server, rel)) == 1  # no retry storm
    assert not (cache / "phoenix" / rel).exists()
    assert not list(cache.rglob("*.part"))


def test_persistent_drops_give_up_after_retries(server, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    server.state["faults"][rel] = "drop_always"
    with pytest.raises(RemapDataError, match="after 3 attempts") as err:
        phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url,
                            **{**FAST, "retries": 2})
    assert "partial file kept" in str(err.value)
    reqs = requests_for(server, rel)
    assert len(reqs) == 3
    assert all(r[1] for r in reqs[1:])  # every retry resumed
    assert not (cache / "phoenix" / rel).exists()
    part = cache / "phoenix" / (rel + ".part")
    assert part.exists() and part.stat().st_size > 0
    # the next call resumes from the .part and completes once the server behaves
    del server.state["faults"][rel]
    size_before = part.stat().st_size
    path = phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert requests_for(server, rel)[-1][1] == f"bytes={size_before}-"
    assert path.read_bytes() == (server.state["root"] / rel).read_bytes()


def test_corrupted_file_rejected_and_removed(server, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    server.state["faults"][rel] = "garbage"
    with pytest.raises(RemapDataError, match="corrupt download") as err:
        phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert rel in err.value.source
    assert len(requests_for(server, rel)) == 1
    assert not (cache / "phoenix" / rel).exists()
    assert not list(cache.rglob("*.part"))
    assert not [p for p in (cache / "phoenix").rglob("*") if p.is_file() and "lte" in p.name]


def test_hash_mismatch_rejected_and_removed(server, server_root, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    good = hashlib.sha256((server_root / rel).read_bytes()).hexdigest()
    server.state["faults"][rel] = "flip_data"
    with pytest.raises(RemapDataError, match="sha256 mismatch"):
        phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url, expected_sha256=good, **FAST)
    assert not (cache / "phoenix" / rel).exists()
    assert not list(cache.rglob("*.part"))
    del server.state["faults"][rel]
    path = phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url, expected_sha256=good, **FAST)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == good


def test_served_header_mismatch_rejected(server, server_root, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    write_flux(server_root / rel, node, PHXLOGG=4.0)
    with pytest.raises(RemapDataError, match="do not match"):
        phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert not (cache / "phoenix" / rel).exists()
    assert not list(cache.rglob("*.part"))


def test_served_wrong_length_rejected(server, server_root, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    write_flux(server_root / rel, node, npix=NPIX // 2)
    with pytest.raises(RemapDataError, match="2500 pixels but the wavelength grid has 5000"):
        phoenix_fetch.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert not list(cache.rglob("*.part"))


def test_download_wave_checks_length(server, tmp_path):
    with pytest.raises(RemapDataError, match="expected 1569128"):
        phoenix_fetch.download_wave(cache=tmp_path / "c1", base_url=server.base_url, expected_npix=ph.HIRES_NPIX,
                                    **FAST)
    assert not (tmp_path / "c1" / "phoenix" / ph.WAVE_RELPATH).exists()
    path = phoenix_fetch.download_wave(cache=tmp_path / "c2", base_url=server.base_url, expected_npix=NPIX, **FAST)
    assert phoenix_read.read_wave(path).size == NPIX


def test_fetch_grid_summary_and_rerun(server, tmp_path):
    cache = tmp_path / "cache"
    missing = (6000, 4.0, -2.0, 0.0)
    nodes = [NODES[0], {"teff": 5800, "logg": 4.5, "monh": 0.5}, missing, NODES[2], NODES[0]]
    summary = phoenix_fetch.fetch_phoenix_grid(nodes, cache=cache, base_url=server.base_url, **FAST)
    assert len(summary.downloaded) == 3 and not summary.cached
    assert [n for n, _ in summary.failed] == [missing]
    assert "404" in summary.failed[0][1]
    assert not summary.ok
    assert "3 downloaded, 0 already cached, 1 failed" in str(summary)
    assert len(requests_for(server, ph.phoenix_relpath(*missing))) == 1

    again = phoenix_fetch.fetch_phoenix_grid(nodes, cache=cache, base_url=server.base_url, **FAST)
    assert len(again.cached) == 3 and not again.downloaded and len(again.failed) == 1
    with pytest.raises(RemapDataError, match="404"):
        phoenix_fetch.fetch_phoenix_grid([missing], cache=cache, base_url=server.base_url, keep_going=False, **FAST)
    with pytest.raises(ValueError, match="nearest"):  # validated before anything is fetched
        phoenix_fetch.fetch_phoenix_grid([NODES[0], (5850, 4.5, 0.0)], cache=tmp_path / "other",
                              base_url=server.base_url, **FAST)
    assert not (tmp_path / "other").exists()
