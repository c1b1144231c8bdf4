"""Fixtures of the source tests: PHOENIX files and a loopback server for them (tests/phoenixfake.py); the real
MILES folder, where the cache has it or pip can fetch it."""

import pytest
from phoenixfake import NODES, serving, write_flux, write_wave

from remap_lib.data.sources import miles
from remap_lib.data.sources import phoenix as ph
from remap_lib.fileio import RemapDataError


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


@pytest.fixture(scope="module")
def real_folder():
    """The MILES folder of the sdss-mangadap wheel; the test is skipped where it cannot be had."""
    try:
        return miles.fetch_miles()
    except (RemapDataError, OSError) as err:  # no cache and no way to download
        pytest.skip(f"MILES archive not available: {err}")
