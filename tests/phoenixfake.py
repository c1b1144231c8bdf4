"""PHOENIX-format files and a loopback HTTP server that serves them, for the PHOENIX tests.

Nothing here touches the network: the tests write their own WAVE and flux files (5000 px) in the
server's folder layout and serve them from ``http.server`` on 127.0.0.1 with Range support and
fault modes (dropped connection, server ignoring Range, 5xx, corrupt body).
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import urllib.parse
from pathlib import Path

import numpy as np
from astropy.io import fits

from remap_lib.data.sources import phoenix as ph

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


def requests_for(server, rel):
    return [r for r in server.state["requests"] if r[0] == rel]


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
