"""scripts/ensure-chromium.sh, which `make test` runs before anything else: a browser, or one clear line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-chromium.sh"


def _run(**env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("REMAP_CHROMIUM", "REMAP_SKIP_RENDERED")}
    return subprocess.run(["bash", str(SCRIPT)], env={**base, **env}, capture_output=True, text=True, timeout=60)


def test_named_browser_is_used(tmp_path):
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\necho 'Chromium 1.2.3'\n")
    browser.chmod(0o755)
    done = _run(REMAP_CHROMIUM=str(browser))
    assert done.returncode == 0 and "chromium: Chromium 1.2.3" in done.stdout


def test_missing_named_browser_stops_with_the_command_to_run(tmp_path):
    done = _run(REMAP_CHROMIUM=str(tmp_path / "nowhere"))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "apt-get install -y chromium" in lines[0] and "REMAP_SKIP_RENDERED=1" in lines[0]


def test_skipping_is_asked_for_and_said(tmp_path):
    done = _run(REMAP_SKIP_RENDERED="1", REMAP_CHROMIUM=str(tmp_path / "nowhere"))
    assert done.returncode == 0 and "will be skipped" in done.stdout
