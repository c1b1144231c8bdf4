"""Fixtures of the PHOENIX tests: the server's files and a loopback server for them (tests/phoenixfake.py)."""

import pytest
from phoenixfake import NODES, serving, write_flux, write_wave

from remap_lib.data.sources import phoenix as ph


@pytest.fixture
def server_root(tmp_path):
    root = tmp_path / "server"
    write_wave(root / ph.WAVE_RELPATH)
    for node in NODES:
        write_flux(root / ph.phoenix_relpath(*node), node)
    return root


@pytest.fixture
def server(server_root):
    with serving(server_root) as httpd:
        yield httpd
