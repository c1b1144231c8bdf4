"""The package as a user installs it: a wheel, used from a folder that is not the repository.

The wheel is built from this checkout and unpacked into a temporary folder that comes first on
``PYTHONPATH``, so the interpreter imports that copy and not the clone; the commands then run from
another temporary folder. Prediction must work there (the shipped model is package data), and
whatever needs a clone must say so instead of failing on a path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("installed")
    wheels, site, elsewhere = root / "wheels", root / "site", root / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True,
                   cwd=root)
    wheel = next(wheels.glob("remap-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, cwd=root)
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    env.pop("REMAP_WORK", None)
    return {"site": site, "cwd": elsewhere, "env": env, "wheel": wheel}


def _run(installed, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=installed["cwd"], env=installed["env"], capture_output=True,
                          text=True, timeout=300)


def _write_spectrum(path: Path) -> Path:
    """A 1-D FITS image with a linear wavelength WCS covering the model's window, as MILES ships them."""
    wave = 4800.0 + 0.9 * np.arange(1300)
    flux = 1.0 - 0.3 * np.exp(-0.5 * ((wave[:, None] - np.array([5167.3, 5172.7, 5183.6, 5270.0])) / 1.2) ** 2).sum(1)
    header = fits.Header({"CRVAL1": 4800.0, "CDELT1": 0.9, "CRPIX1": 1.0, "CTYPE1": "WAVE"})
    fits.PrimaryHDU(flux.astype(np.float32), header=header).writeto(path)
    return path


def test_wheel_holds_the_model_and_no_clone_files(installed):
    names = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(installed["wheel"])], capture_output=True,
                           text=True, check=True).stdout
    assert "remap_lib/models/deep_remap_miles_default.pt" in names
    assert "remap_lib/models/deep_remap_miles_default.ood.npz" in names  # its out-of-domain detector
    assert "remap_lib/models/deep_remap_miles_default.widening.json" in names  # its widening
    # the clone's data/ and notebooks/ folders stay out (remap_lib/data/ is the package's data layer)
    files = [line.split()[0] for line in names.splitlines()[1:] if line.strip()]
    assert not [f for f in files if f.startswith(("data/", "notebooks/"))]


def test_predict_from_outside_a_clone(installed):
    spectrum = _write_spectrum(installed["cwd"] / "star.fits")
    done = _run(installed, "-m", "remap_lib.cli", "predict", spectrum.name, "-o", "out.ecsv", "--quiet")
    assert done.returncode == 0, done.stderr
    from astropy.table import Table

    table = Table.read(installed["cwd"] / "out.ecsv")
    assert len(table) == 1 and np.isfinite(table["teff_median"][0]) and not table["error"][0]

    code = ("import numpy as np, remap_lib, remap_lib.paths as p; from astropy.io import fits\n"
            "h = fits.open('star.fits')[0]; w = h.header['CRVAL1'] + h.header['CDELT1'] * np.arange(h.data.size)\n"
            "t = remap_lib.predict((w, h.data))\n"
            "print(remap_lib.__file__, p.IN_CLONE, float(t['teff_median'][0]))")
    done = _run(installed, "-c", code)
    assert done.returncode == 0, done.stderr
    module, in_clone, teff = done.stdout.split()
    assert Path(module).is_relative_to(installed["site"]), f"imported the clone's copy: {module}"
    assert in_clone == "False" and np.isfinite(float(teff))


@pytest.mark.parametrize("argv, what", [(["grid", "verify"], "data manifest"),
                                         (["prepare"], "shipped synthetic grid"),
                                         (["book", "run"], "notebooks folder")])
def test_clone_only_commands_say_so(installed, argv, what):
    done = _run(installed, "-m", "remap_lib.cli", *argv)
    assert done.returncode == 2
    assert what in done.stderr and "not with the installed package: work in a clone" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_extra_is_named_not_a_traceback(monkeypatch, capsys):
    # a predict-only install has no pandas: the training commands say which extra brings it
    from remap_lib import cli

    def needs_pandas(args):
        raise ModuleNotFoundError("No module named 'pandas'", name="pandas")

    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser(), needs_pandas))
    assert cli.main(["validate"]) == 2
    said = capsys.readouterr().err
    assert 'needs pandas, which a predict-only install leaves out: pip install "remap[train]"' in said


def _with_func(parser, func):
    real = parser.parse_args

    def parse_args(argv):
        args = real(argv)
        args.func = func
        return args

    parser.parse_args = parse_args
    return parser
