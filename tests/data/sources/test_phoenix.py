"""PHOENIX names, reader and downloader, against small PHOENIX-format files and a loopback server.

Nothing here touches the network: the tests write their own WAVE and flux files (5000 px) in the
server's folder layout and serve them from ``http.server`` on 127.0.0.1 with Range support and
fault modes (dropped connection, server ignoring Range, 5xx, corrupt body).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import socket
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from remap_lib.data.sources import phoenix as ph
from remap_lib.fileio import RemapDataError

NPIX = 5000
FAST = dict(retries=4, backoff=0.001, timeout=5, progress=False)


# ------------------------------------------------------------------------------------------
# Fixture files
# ------------------------------------------------------------------------------------------


def write_wave(path: Path, npix: int = NPIX, lo: float = 3000.0, hi: float = 12000.0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = np.geomspace(lo, hi, npix)
    hdu = fits.PrimaryHDU(wave.astype(">f8"))
    hdu.header["UNIT"] = "Angstrom"
    hdu.writeto(path, overwrite=True)
    return wave


def write_flux(path: Path, node, npix: int = NPIX, flux=None, drop=(), **overrides) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    teff, logg, monh, alpha = node
    if flux is None:
        rng = np.random.default_rng(int(teff) + int(10 * logg))
        flux = (1e14 * (1 + 0.1 * rng.standard_normal(npix))).astype(np.float32)
    hdu = fits.PrimaryHDU(np.asarray(flux, dtype=">f4"))
    values = {"PHXTEFF": float(teff), "PHXLOGG": float(logg), "PHXM_H": float(monh),
              "PHXALPHA": float(alpha), "BUNIT": "erg/s/cm^2/cm"}
    values.update(overrides)
    for key, value in values.items():
        if key not in drop:
            hdu.header[key] = value
    hdu.writeto(path, overwrite=True)
    return np.asarray(flux, dtype=np.float64)


NODES = [(5800, 4.5, 0.0, 0.0), (5800, 4.5, 0.5, 0.0), (5000, 3.0, -1.0, 0.2)]


@pytest.fixture
def server_root(tmp_path):
    root = tmp_path / "server"
    write_wave(root / ph.WAVE_RELPATH)
    for node in NODES:
        write_flux(root / ph.phoenix_relpath(*node), node)
    return root


# ------------------------------------------------------------------------------------------
# Loopback HTTP server
# ------------------------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # dropped connections are the point
        pass


class _Handler(http.server.BaseHTTPRequestHandler):

    def log_message(self, *args):
        pass

    def do_GET(self):
        st = self.server.state
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if not path.startswith("/data/"):
            return self._send(404, b"not found")
        rel = path[len("/data/"):]
        rng = self.headers.get("Range")
        with st["lock"]:
            st["requests"].append((rel, rng))
            st["counts"][rel] = st["counts"].get(rel, 0) + 1
            count = st["counts"][rel]
        mode = st["faults"].get(rel)
        file = st["root"] / rel
        if mode == "404" or not file.is_file():
            return self._send(404, b"not found")
        body = file.read_bytes()
        if mode == "500_once" and count == 1:
            return self._send(500, b"oops")
        if mode == "garbage":
            body = bytes((b * 7 + 13) % 256 for b in body)
        if mode == "flip_data":  # valid FITS, different bytes: only a hash can tell
            body = body[:3000] + bytes(b ^ 0x01 for b in body[3000:3100]) + body[3100:]
        size = len(body)
        if mode in ("drop_first", "drop_always") and (mode == "drop_always" or count == 1):
            start = 0
            if rng and mode == "drop_always":
                start = int(rng.split("=")[1].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(size - start))
            self.end_headers()
            chunk = body[start:start + max(1, (size - start) // 3)]
            self.wfile.write(chunk)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if rng and mode != "ignore_range":
            start = int(rng.split("=")[1].split("-")[0])
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.send_header("Content-Length", str(size - start))
            self.end_headers()
            self.wfile.write(body[start:])
            return
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.write(body)

    def _send(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def serving(root: Path):
    """A loopback server for the files under ``root``, at ``.base_url``."""
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.state = {"root": root, "faults": {}, "requests": [], "counts": {},
                   "lock": threading.Lock()}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/data/"
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


@pytest.fixture
def server(server_root):
    with serving(server_root) as httpd:
        yield httpd


def requests_for(server, rel):
    return [r for r in server.state["requests"] if r[0] == rel]


# ------------------------------------------------------------------------------------------
# Names
# ------------------------------------------------------------------------------------------


def test_filename_and_relpath_examples():
    suffix = ".PHOENIX-ACES-AGSS-COND-2011-HiRes.fits"
    assert ph.phoenix_filename(5800, 4.5, 0.0) == "lte05800-4.50-0.0" + suffix
    assert ph.phoenix_filename(2300, 0.0, 0.0) == "lte02300-0.00-0.0" + suffix
    assert ph.phoenix_filename(12000, 6.0, 1.0) == "lte12000-6.00+1.0" + suffix
    assert ph.phoenix_relpath(5800, 4.5, -0.0) == (
        "HiResFITS/PHOENIX-ACES-AGSS-COND-2011/Z-0.0/lte05800-4.50-0.0" + suffix)
    assert ph.phoenix_relpath(5800, 4.5, 0.5) == (
        "HiResFITS/PHOENIX-ACES-AGSS-COND-2011/Z+0.5/lte05800-4.50+0.5" + suffix)
    assert ph.phoenix_relpath(5800, 4.5, -1.0) == (
        "HiResFITS/PHOENIX-ACES-AGSS-COND-2011/Z-1.0/lte05800-4.50-1.0" + suffix)
    assert ph.phoenix_relpath(5800, 4.5, 0.0, 0.2) == (
        "HiResFITS/PHOENIX-ACES-AGSS-COND-2011/Z-0.0.Alpha=+0.20/lte05800-4.50-0.0.Alpha=+0.20" + suffix)
    assert ph.phoenix_relpath(4000, 1.0, -1.5, -0.2) == (
        "HiResFITS/PHOENIX-ACES-AGSS-COND-2011/Z-1.5.Alpha=-0.20/lte04000-1.00-1.5.Alpha=-0.20" + suffix)
    assert ph.WAVE_RELPATH == "HiResFITS/WAVE_PHOENIX-ACES-AGSS-COND-2011.fits"


def test_parse_examples_and_path_prefix():
    assert ph.parse_phoenix_filename("lte05800-4.50+0.5.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits") == (
        5800, 4.5, 0.5, 0.0)
    node = ph.parse_phoenix_filename(
        "Z-0.0.Alpha=+0.20/lte05800-4.50-0.0.Alpha=+0.20.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits")
    assert node == (5800.0, 4.5, 0.0, 0.2)
    assert node.alpha == 0.2 and node.monh == 0.0 and np.signbit(node.monh) == 0


def test_round_trip_whole_grid():
    count = 0
    for teff in ph.GRID_TEFF:
        for logg in ph.GRID_LOGG:
            for monh in ph.GRID_MONH:
                alphas = [0.0]
                if 3500 <= teff <= 8000 and -3 <= monh <= 0 and logg in (0.0, 4.5):
                    alphas = ph.GRID_ALPHA
                for alpha in alphas:
                    name = ph.phoenix_filename(teff, logg, monh, alpha)
                    node = ph.parse_phoenix_filename(name)
                    assert node == (teff, logg, monh, alpha)
                    assert ph.phoenix_filename(*node) == name
                    rel = ph.phoenix_relpath(*node)
                    assert rel.endswith("/" + name)
                    assert rel.split("/")[2] == ph.phoenix_folder(monh, alpha)
                    count += 1
    assert count > 8000


def test_logg_sign_convention():
    # PHOENIX writes "-log g": a '-' before log g means a positive log g, '+' a negative one.
    name = ph.phoenix_filename(5800, -0.5, 0.0, validate=False)
    assert name.startswith("lte05800+0.50-0.0.")
    assert ph.parse_phoenix_filename(name).logg == -0.5
    assert ph.parse_phoenix_filename("lte05800-4.50-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits").logg == 4.5
    with pytest.raises(ValueError, match="log g"):
        ph.validate_node(5800, -0.5, 0.0)


@pytest.mark.parametrize("name", [
    "lte5800-4.50-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits",       # 4-digit Teff
    "lte05800-4.5-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits",       # one decimal log g
    "lte05800-4.50+0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits",      # solar must be -0.0
    "lte05800-4.50-0.0.Alpha=+0.2.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits",
    "lte05800-4.50-0.0.Alpha=+0.00.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits",  # alpha 0 has no suffix
    "lte05800+0.00-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits",      # log g 0 is written -0.00
    "lte05800-4.50-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits.gz",
    "WAVE_PHOENIX-ACES-AGSS-COND-2011.fits",
])
def test_parse_rejects_noncanonical(name):
    with pytest.raises(ValueError):
        ph.parse_phoenix_filename(name)


def test_validation_lists_nearest_values():
    with pytest.raises(ValueError, match=r"Teff=5850.*nearest: 5800, 5900"):
        ph.validate_node(5850, 4.5, 0.0)
    with pytest.raises(ValueError, match=r"Teff=7100.*nearest: 7000, 7200"):
        ph.validate_node(7100, 4.5, 0.0)
    with pytest.raises(ValueError, match=r"log g=4.3.*nearest: 4.00, 4.50"):
        ph.validate_node(5800, 4.3, 0.0)
    with pytest.raises(ValueError, match=r"\[M/H\]=-2.5.*nearest: -3.0, -2.0"):
        ph.validate_node(5800, 4.5, -2.5)
    with pytest.raises(ValueError, match=r"\[alpha/M\]=0.3.*nearest: \+0.20, \+0.40"):
        ph.validate_node(5800, 4.5, 0.0, 0.3)
    with pytest.raises(ValueError, match=r"exist only for 3500 <= Teff <= 8000"):
        ph.validate_node(9000, 4.5, 0.0, 0.4)
    with pytest.raises(ValueError, match=r"Teff=13000"):
        ph.phoenix_filename(13000, 4.5, 0.0)
    assert ph.validate_node("5800", 4.5, -0.0) == (5800.0, 4.5, 0.0, 0.0)


# ------------------------------------------------------------------------------------------
# Reader
# ------------------------------------------------------------------------------------------


def test_read_phoenix_full_and_cropped(tmp_path):
    wave_path = tmp_path / ph.WAVE_RELPATH
    wave = write_wave(wave_path)
    node = (5000, 3.0, -1.0, 0.2)
    flux_path = tmp_path / ph.phoenix_relpath(*node)
    flux = write_flux(flux_path, node)

    spec = ph.read_phoenix(flux_path, wave_path)
    assert spec.wave.dtype == np.float64 and spec.wave.shape == (NPIX,)
    np.testing.assert_array_equal(spec.wave, wave)
    np.testing.assert_allclose(spec.flux, flux, rtol=1e-7)
    assert spec.labels == node
    assert (spec.teff, spec.logg, spec.monh, spec.alpha) == (5000.0, 3.0, -1.0, 0.2)
    assert spec.flux_unit == "erg/s/cm^2/cm" and spec.wave_unit == "Angstrom" and spec.vacuum
    assert spec.header["PHXTEFF"] == 5000.0

    cropped = ph.read_phoenix(flux_path, wave_path, window=(5000.0, 5700.0))
    inside = (wave >= 5000.0) & (wave <= 5700.0)
    np.testing.assert_array_equal(cropped.wave, wave[inside])
    np.testing.assert_allclose(cropped.flux, flux[inside], rtol=1e-7)
    with pytest.raises(RemapDataError, match="outside the wavelength grid"):
        ph.read_phoenix(flux_path, wave_path, window=(20000.0, 21000.0))
    with pytest.raises(ValueError, match="wmin < wmax"):
        ph.read_phoenix(flux_path, wave_path, window=(6000.0, 5000.0))


def test_read_wave_is_cached_and_refreshed(tmp_path):
    path = tmp_path / "WAVE_PHOENIX-ACES-AGSS-COND-2011.fits"
    write_wave(path)
    first = ph.read_wave(path)
    assert ph.read_wave(path) is first
    assert first.dtype == np.float64 and not first.flags.writeable
    write_wave(path, npix=NPIX + 10)
    os.utime(path, ns=(1, 1))  # make sure the file version key changes
    assert ph.read_wave(path).size == NPIX + 10


@pytest.fixture
def reader_files(tmp_path):
    wave_path = tmp_path / "WAVE_PHOENIX-ACES-AGSS-COND-2011.fits"
    write_wave(wave_path)
    node = (5800, 4.5, 0.0, 0.0)
    flux_path = tmp_path / ph.phoenix_filename(*node)
    return wave_path, node, flux_path


def test_reader_empty_file(reader_files):
    wave_path, node, flux_path = reader_files
    flux_path.write_bytes(b"")
    with pytest.raises(RemapDataError, match="empty") as err:
        ph.read_phoenix(flux_path, wave_path)
    assert str(flux_path) in str(err.value)


def test_reader_truncated_data(reader_files):
    wave_path, node, flux_path = reader_files
    write_flux(flux_path, node)
    data = flux_path.read_bytes()
    flux_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RemapDataError, match="truncated") as err:
        ph.read_phoenix(flux_path, wave_path)
    assert err.value.source == str(flux_path)
    with pytest.raises(RemapDataError, match="truncated"):  # also when only a window is read
        ph.read_phoenix(flux_path, wave_path, window=(3000, 3100))


def test_reader_truncated_header_and_not_fits(reader_files):
    wave_path, node, flux_path = reader_files
    write_flux(flux_path, node)
    flux_path.write_bytes(flux_path.read_bytes()[:1000])
    with pytest.raises(RemapDataError, match="not a readable FITS") as err:
        ph.read_phoenix(flux_path, wave_path)
    assert str(flux_path) in str(err.value)
    flux_path.write_text("<html>404 Not Found</html>\n" * 50)
    with pytest.raises(RemapDataError, match="not a readable FITS"):
        ph.read_phoenix(flux_path, wave_path)


def test_reader_missing_header_keys(reader_files):
    wave_path, node, flux_path = reader_files
    write_flux(flux_path, node, drop=("PHXLOGG", "PHXALPHA"))
    with pytest.raises(RemapDataError, match="missing PHOENIX header keys: PHXLOGG, PHXALPHA"):
        ph.read_phoenix(flux_path, wave_path)


def test_reader_all_nan(reader_files):
    wave_path, node, flux_path = reader_files
    write_flux(flux_path, node, flux=np.full(NPIX, np.nan, dtype=np.float32))
    with pytest.raises(RemapDataError, match="no finite values"):
        ph.read_phoenix(flux_path, wave_path)


def test_reader_header_filename_mismatch(reader_files):
    wave_path, node, flux_path = reader_files
    write_flux(flux_path, node, PHXTEFF=5900.0)
    with pytest.raises(RemapDataError, match="do not match the file name") as err:
        ph.read_phoenix(flux_path, wave_path)
    assert err.value.source == str(flux_path)
    # a renamed (non-PHOENIX) file is read with the header's labels
    other = flux_path.with_name("mystar.fits")
    flux_path.rename(other)
    assert ph.read_phoenix(other, wave_path).teff == 5900.0


def test_reader_length_mismatch(reader_files):
    wave_path, node, flux_path = reader_files
    write_flux(flux_path, node, npix=NPIX - 1)
    with pytest.raises(RemapDataError, match="4999 pixels but the wavelength grid has 5000"):
        ph.read_phoenix(flux_path, wave_path)


# ------------------------------------------------------------------------------------------
# Downloader
# ------------------------------------------------------------------------------------------


def test_download_and_cache_layout(server, server_root, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[1]
    rel = ph.phoenix_relpath(*node)
    path = ph.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert path == cache / "phoenix" / rel
    assert "Z+0.5" in str(path)
    assert path.read_bytes() == (server_root / rel).read_bytes()
    assert (cache / "phoenix" / ph.WAVE_RELPATH).read_bytes() == (server_root / ph.WAVE_RELPATH).read_bytes()
    assert not list(cache.rglob("*.part"))
    assert ph.read_phoenix(path, cache / "phoenix" / ph.WAVE_RELPATH).labels == node
    n = len(server.state["requests"])
    assert ph.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST) == path
    assert len(server.state["requests"]) == n  # cached: nothing fetched


def test_env_overrides(server, server_root, tmp_path, monkeypatch):
    monkeypatch.setenv("REMAP_PHOENIX_URL", server.base_url.rstrip("/"))
    monkeypatch.setenv("REMAP_CACHE", str(tmp_path / "envcache"))
    assert ph.phoenix_base_url() == server.base_url
    path = ph.download_phoenix(*NODES[2], **FAST)
    assert path == tmp_path / "envcache" / "phoenix" / ph.phoenix_relpath(*NODES[2])
    assert "Z-1.0.Alpha=+0.20" in str(path)


def test_dropped_connection_resumes_with_range(server, server_root, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    server.state["faults"][rel] = "drop_first"
    path = ph.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
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
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    original = (server_root / rel).read_bytes()
    part = cache / "phoenix" / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(original[:12345])
    path = ph.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert path.read_bytes() == original
    assert requests_for(server, rel) == [(rel, "bytes=12345-")]
    assert not part.exists()


def test_complete_part_answered_416(server, server_root, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    original = (server_root / rel).read_bytes()
    part = cache / "phoenix" / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(original)
    path = ph.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert path.read_bytes() == original
    assert requests_for(server, rel) == [(rel, f"bytes={len(original)}-")]


def test_server_ignoring_range_restarts_from_zero(server, server_root, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    server.state["faults"][rel] = "ignore_range"
    original = (server_root / rel).read_bytes()
    part = cache / "phoenix" / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"X" * 5000)  # would corrupt the file if appended to
    path = ph.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert path.read_bytes() == original
    assert requests_for(server, rel) == [(rel, "bytes=5000-")]


def test_5xx_is_retried(server, server_root, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    server.state["faults"][rel] = "500_once"
    path = ph.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert path.read_bytes() == (server_root / rel).read_bytes()
    assert len(requests_for(server, rel)) == 2


def test_404_fails_at_once(server, tmp_path):
    cache = tmp_path / "cache"
    node = (6000, 4.0, -2.0, 0.0)  # valid node, not on this server
    rel = ph.phoenix_relpath(*node)
    with pytest.raises(RemapDataError, match="404") as err:
        ph.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
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
        ph.download_phoenix(*node, cache=cache, base_url=server.base_url,
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
    path = ph.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert requests_for(server, rel)[-1][1] == f"bytes={size_before}-"
    assert path.read_bytes() == (server.state["root"] / rel).read_bytes()


def test_corrupted_file_rejected_and_removed(server, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    server.state["faults"][rel] = "garbage"
    with pytest.raises(RemapDataError, match="corrupt download") as err:
        ph.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
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
        ph.download_phoenix(*node, cache=cache, base_url=server.base_url, expected_sha256=good, **FAST)
    assert not (cache / "phoenix" / rel).exists()
    assert not list(cache.rglob("*.part"))
    del server.state["faults"][rel]
    path = ph.download_phoenix(*node, cache=cache, base_url=server.base_url, expected_sha256=good, **FAST)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == good


def test_served_header_mismatch_rejected(server, server_root, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    write_flux(server_root / rel, node, PHXLOGG=4.0)
    with pytest.raises(RemapDataError, match="do not match"):
        ph.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert not (cache / "phoenix" / rel).exists()
    assert not list(cache.rglob("*.part"))


def test_served_wrong_length_rejected(server, server_root, tmp_path):
    cache = tmp_path / "cache"
    node = NODES[0]
    rel = ph.phoenix_relpath(*node)
    write_flux(server_root / rel, node, npix=NPIX // 2)
    with pytest.raises(RemapDataError, match="2500 pixels but the wavelength grid has 5000"):
        ph.download_phoenix(*node, cache=cache, base_url=server.base_url, **FAST)
    assert not list(cache.rglob("*.part"))


def test_download_wave_checks_length(server, tmp_path):
    with pytest.raises(RemapDataError, match="expected 1569128"):
        ph.download_wave(cache=tmp_path / "c1", base_url=server.base_url, expected_npix=ph.HIRES_NPIX, **FAST)
    assert not (tmp_path / "c1" / "phoenix" / ph.WAVE_RELPATH).exists()
    path = ph.download_wave(cache=tmp_path / "c2", base_url=server.base_url, expected_npix=NPIX, **FAST)
    assert ph.read_wave(path).size == NPIX


def test_fetch_grid_summary_and_rerun(server, tmp_path):
    cache = tmp_path / "cache"
    missing = (6000, 4.0, -2.0, 0.0)
    nodes = [NODES[0], {"teff": 5800, "logg": 4.5, "monh": 0.5}, missing, NODES[2], NODES[0]]
    summary = ph.fetch_phoenix_grid(nodes, cache=cache, base_url=server.base_url, **FAST)
    assert len(summary.downloaded) == 3 and not summary.cached
    assert [n for n, _ in summary.failed] == [missing]
    assert "404" in summary.failed[0][1]
    assert not summary.ok
    assert "3 downloaded, 0 already cached, 1 failed" in str(summary)
    assert len(requests_for(server, ph.phoenix_relpath(*missing))) == 1

    again = ph.fetch_phoenix_grid(nodes, cache=cache, base_url=server.base_url, **FAST)
    assert len(again.cached) == 3 and not again.downloaded and len(again.failed) == 1
    with pytest.raises(RemapDataError, match="404"):
        ph.fetch_phoenix_grid([missing], cache=cache, base_url=server.base_url, keep_going=False, **FAST)
    with pytest.raises(ValueError, match="nearest"):  # validated before anything is fetched
        ph.fetch_phoenix_grid([NODES[0], (5850, 4.5, 0.0)], cache=tmp_path / "other",
                              base_url=server.base_url, **FAST)
    assert not (tmp_path / "other").exists()


# ------------------------------------------------------------------------------------------
# The FGK grid from PHOENIX: remap prepare --library phoenix, then remap train
# ------------------------------------------------------------------------------------------


def write_phoenix_like(root: Path, nodes) -> None:
    """A WAVE file (vacuum Å, R ~ 200 000 around the window) and flux files in the server's layout:
    a Planck continuum in erg/s/cm²/cm with two lines whose depths follow Teff and [M/H]."""
    wave = write_wave(root / ph.WAVE_RELPATH, 35_000, 4900.0, 5800.0)
    hc_k = 1.438777e8  # hc/k in Å·K
    for node in nodes:
        teff, logg, monh, _ = node
        planck = 1e27 / wave**5 / np.expm1(hc_k / (wave * teff))
        depth = np.clip(0.9 - teff / 10000 + 0.1 * monh, 0.05, 0.95)
        lines = 1 - depth * np.exp(-0.5 * ((wave - 5171.0) / 0.3) ** 2) \
            - 0.05 * logg * np.exp(-0.5 * ((wave - 5530.0) / 0.3) ** 2)
        write_flux(root / ph.phoenix_relpath(*node), node, npix=wave.size, flux=planck * lines, PHXXI_L=1.2)


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
