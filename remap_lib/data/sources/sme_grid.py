"""Build the shipped synthetic library: every MARCS node in the FGK box, synthesized once.

The build is resumable. Each node is synthesized in a worker process and written atomically as
one small file in a work folder; a restarted build skips nodes whose file exists, so no node is
computed twice or left half-written. When every node is done the files are assembled into one
compressed HDF5 (again atomically) with its provenance and a sha256 manifest.

    remap grid build                    # all cores, resumes where it stopped
    remap grid build --limit 20         # at most 20 more nodes this run
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from remap_lib.data.cache import GES_LINELIST_ARCHIVE, MARCS_ARCHIVE
from remap_lib.data.sources.linelist import linelist_sha256
from remap_lib.data.sources.marcs import FGK_BOX, MarcsModel, select_nodes
from remap_lib.data.sources.sme import DEFAULT_SETTINGS, SynthesisSettings, synthesize
from remap_lib.fileio import RemapDataError, atomic_path, atomic_write, sha256_file, write_json
from remap_lib.paths import DATA_DIR, repo_file
from remap_lib.spectra import preprocess
from remap_lib.spectra.instruments import C_KMS, Instrument

GRID_FILE = DATA_DIR / "sme_marcs_ges_r11000.h5"
WORK_DIR = DATA_DIR / "sme_grid_work"
MANIFEST = DATA_DIR / "MANIFEST.sha256"
#: Provenance ``use`` of a library that must never be trained on (``load_grid`` refuses it).
TEST_ONLY = "test only"

#: How the library is stored: R = 11000 sampled at 4 pixels per resolution element over
#: 4950–5750 Å (air), wider than the MARVELS window to leave room for RV shifts.
GRID_STORAGE = Instrument("SME-R11000", 4950.0, 5750.0, medium="air", resolution=11000.0,
                          velocity_pixel=C_KMS / 11000.0 / 4)


def node_key(model: MarcsModel) -> str:
    return f"t{model.teff:05.0f}_g{model.logg:+.2f}_m{model.monh:+.2f}"


@dataclass(frozen=True)
class _Job:
    model: MarcsModel
    settings: SynthesisSettings
    storage: Instrument
    workdir: str


def synthesize_node(model: MarcsModel, settings: SynthesisSettings = DEFAULT_SETTINGS,
                    storage: Instrument = GRID_STORAGE) -> tuple[np.ndarray, float]:
    """One node at the storage resolution: (flux on ``storage.wavelength_grid()``, seconds)."""
    start = time.perf_counter()
    wave, flux, _ = synthesize(model, settings)
    seconds = time.perf_counter() - start
    out, _, _ = preprocess.degrade(wave, flux, storage, source=model.name)
    return np.asarray(out, dtype=np.float32), seconds


def _run_job(job: _Job) -> str:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    flux, seconds = synthesize_node(job.model, job.settings, job.storage)
    target = Path(job.workdir) / f"{node_key(job.model)}.npz"
    with atomic_write(target) as fh:
        np.savez_compressed(fh, flux=flux, seconds=np.float64(seconds), name=np.str_(job.model.name))
    return node_key(job.model)


def pending_nodes(nodes, workdir=WORK_DIR) -> list[MarcsModel]:
    """Nodes whose result file is not yet in ``workdir``."""
    workdir = Path(workdir)
    return [m for m in nodes if not (workdir / f"{node_key(m)}.npz").exists()]


def build_grid(output=GRID_FILE, workdir=WORK_DIR, nodes=None, settings=DEFAULT_SETTINGS,
               workers: int | None = None, limit: int | None = None, progress: bool = True,
               storage: Instrument = GRID_STORAGE, extra_provenance: dict | None = None) -> Path | None:
    """Synthesize every missing node, then assemble ``output`` once all are present.

    Returns the output path when the grid is complete, ``None`` while nodes remain (after
    ``limit`` new nodes). Safe to kill at any moment and rerun. ``extra_provenance`` updates the
    recorded provenance (another atmosphere library, the test library's purpose).
    """
    nodes = select_nodes() if nodes is None else list(nodes)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _check_settings(workdir, settings, storage)
    todo = pending_nodes(nodes, workdir)
    if limit is not None:
        todo = todo[:limit]
    workers = workers or os.cpu_count() or 1
    if todo:
        jobs = [_Job(m, settings, storage, str(workdir)) for m in todo]
        bar = tqdm(total=len(nodes), initial=len(nodes) - len(pending_nodes(nodes, workdir)),
                   desc="synthesizing", unit="spectrum", disable=not progress)
        if workers == 1:
            for job in jobs:
                _run_job(job)
                bar.update()
        else:
            # spawn: PySME's C library is not fork-safe once loaded in the parent
            with get_context("spawn").Pool(workers, maxtasksperchild=200) as pool:
                for _ in pool.imap_unordered(_run_job, jobs):
                    bar.update()
        bar.close()
    if pending_nodes(nodes, workdir):
        return None
    return assemble_grid(nodes, workdir, output, settings, storage, extra_provenance)


def _check_settings(workdir: Path, settings: SynthesisSettings, storage: Instrument) -> None:
    """Refuse to mix nodes computed with different settings in one work folder."""
    record = workdir / "settings.json"
    wanted = {"synthesis": settings.to_dict(), "storage": storage.to_dict()}
    if record.exists():
        have = json.loads(record.read_text())
        if have != wanted:
            raise RemapDataError(record, f"work folder was started with other settings {have}; "
                                 f"use another --workdir or delete it to start over")
    else:
        write_json(record, wanted)


def provenance(settings: SynthesisSettings, storage: Instrument = GRID_STORAGE) -> dict:
    """Versions, input hashes and settings recorded inside every grid file."""
    versions = {pkg: metadata.version(pkg) for pkg in ("pysme-astro", "numpy", "scipy", "astropy")}
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions,
        "python": platform.python_version(),
        "synthesis": settings.to_dict(),
        "storage": storage.to_dict(),
        "linelist": {"source": GES_LINELIST_ARCHIVE.requirement, "member": GES_LINELIST_ARCHIVE.member_prefix,
                     "archive_sha256": GES_LINELIST_ARCHIVE.sha256, "file_sha256": linelist_sha256()},
        "atmospheres": {"source": MARCS_ARCHIVE.requirement, "archive_sha256": MARCS_ARCHIVE.sha256},
        "abundances": "Asplund et al. (2009) solar, scaled by [M/H]; alpha as in each MARCS model",
        "box": FGK_BOX,
    }


def assemble_grid(nodes, workdir, output, settings=DEFAULT_SETTINGS, storage: Instrument = GRID_STORAGE,
                  extra_provenance: dict | None = None) -> Path:
    """Gather the per-node files into one compressed HDF5, then update the manifest."""
    nodes = list(nodes)
    workdir, output = Path(workdir), Path(output)
    wave = storage.wavelength_grid()
    flux = np.empty((len(nodes), wave.size), dtype=np.float32)
    seconds = np.empty(len(nodes))
    for i, model in enumerate(nodes):
        path = workdir / f"{node_key(model)}.npz"
        try:
            with np.load(path) as part:
                flux[i], seconds[i] = part["flux"], part["seconds"]
        except (OSError, ValueError, KeyError) as err:
            raise RemapDataError(path, f"unreadable node file ({err}); delete it and rerun") from err
    if not np.isfinite(flux).all():
        raise RemapDataError(workdir, "some node files hold non-finite flux; delete them and rerun")
    labels = np.array([[m.teff, m.logg, m.monh] for m in nodes], dtype=np.float64)
    with atomic_path(output) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("wave", data=wave)
            h5.create_dataset("flux", data=flux, chunks=(1, wave.size), compression="gzip",
                              compression_opts=9, scaleoffset=4)
            h5.create_dataset("labels", data=labels)
            h5["labels"].attrs["names"] = ["teff", "logg", "monh"]
            h5.create_dataset("alpha", data=np.array([m.alpha for m in nodes]))
            h5.create_dataset("vmicro", data=np.array([m.vmicro for m in nodes]))
            h5.create_dataset("model", data=np.array([m.name for m in nodes], dtype=h5py.string_dtype()))
            h5.create_dataset("seconds", data=seconds)
            h5.attrs["medium"] = "air"
            h5.attrs["resolution"] = storage.resolution
            # scaleoffset=4 keeps 4 decimals (≤ 5e-5 error), far below the synthesis error
            h5.attrs["flux_quantization"] = 1e-4
            h5.attrs["normalization"] = "divided by the PySME continuum"
            h5.attrs["provenance"] = json.dumps({**provenance(settings, storage), **(extra_provenance or {})})
    write_manifest([output], output.parent / MANIFEST.name)
    return output


def write_manifest(paths, manifest=MANIFEST) -> Path:
    """Add or refresh the sha256 lines of ``paths`` (relative to the manifest's folder)."""
    manifest = Path(manifest)
    entries = {}
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            if line.strip():
                digest, name = line.split(maxsplit=1)
                entries[name.strip()] = digest
    for path in paths:
        entries[str(Path(path).resolve().relative_to(manifest.parent.resolve()))] = sha256_file(path)
    with atomic_write(manifest, "w") as fh:
        fh.writelines(f"{d}  {n}\n" for n, d in sorted(entries.items()))
    return manifest


def verify_manifest(manifest=MANIFEST) -> None:
    """Check every file listed in the manifest; raise naming the first that differs."""
    manifest = repo_file(manifest, "data manifest")
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        path = manifest.parent / name.strip()
        if not path.exists():
            raise RemapDataError(path, f"listed in {manifest.name} but missing")
        actual = sha256_file(path)
        if actual != digest:
            raise RemapDataError(path, f"sha256 {actual} differs from {manifest.name} ({digest})")


@dataclass(frozen=True)
class SyntheticGrid:
    """The shipped library in memory: continuum-normalized flux at R = 11000 (air Å)."""

    wave: np.ndarray
    flux: np.ndarray
    labels: np.ndarray  # (n, 3): Teff, log g, [M/H]
    alpha: np.ndarray
    vmicro: np.ndarray
    model: np.ndarray
    resolution: float
    provenance: dict

    def __len__(self) -> int:
        return len(self.flux)


def load_grid(path=None) -> SyntheticGrid:
    """Read the synthetic grid (default: ``$REMAP_GRID``, else the shipped file).

    Errors name the file (missing, truncated, not a grid).
    """
    path = Path(path or os.environ.get("REMAP_GRID") or GRID_FILE)
    if not path.exists() and path == GRID_FILE:
        repo_file(path, "the shipped synthetic grid")  # outside a clone: says so
    if not path.exists():
        raise RemapDataError(path, "synthetic grid not found: run `remap grid build` (or `make grid`)")
    try:
        with h5py.File(path, "r") as h5:
            grid = SyntheticGrid(
                wave=h5["wave"][:], flux=h5["flux"][:], labels=h5["labels"][:], alpha=h5["alpha"][:],
                vmicro=h5["vmicro"][:], model=h5["model"].asstr()[:], resolution=float(h5.attrs["resolution"]),
                provenance=json.loads(h5.attrs["provenance"]),
            )
    except (OSError, KeyError) as err:
        raise RemapDataError(path, f"not a readable synthetic grid ({err})") from err
    if grid.provenance.get("use") == TEST_ONLY:
        raise RemapDataError(path, "is a held-out test library (provenance use: test only); it is never a training "
                                   "grid: read it with remap_lib.data.kurucztest.load_testset")
    return grid
