"""Predictions for many files at survey scale: chunked, bounded in memory, resumable, shardable.

:func:`predict_files` reads its inputs in chunks of ``chunk_size`` spectra, predicts each chunk and
saves its rows in ``OUTPUT.partial/`` (one file per chunk, each written atomically). When every chunk
is there they are merged into ``OUTPUT``, which is itself written to a temporary name and renamed:
the output is complete or absent, never half-written. A run that is killed (even by SIGKILL) leaves
only finished chunks behind, and rerunning the same command continues from them. A changed input,
model or option starts afresh (the partial directory records a fingerprint of all three).

Under ``torchrun`` every rank takes the chunks ``k`` with ``k % WORLD_SIZE == RANK`` (on GPU ``k``
uses ``cuda:LOCAL_RANK``); rank 0 merges after a barrier::

    torchrun --standalone --nproc_per_node 4 -m remap_lib.cli predict survey/*.fits -o survey.h5 --device cuda

Memory is bounded by one chunk (plus the merge for ``.ecsv``/``.fits``/``.csv``, which holds the
output table; ``.h5`` output is appended chunk by chunk).
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fileio import RemapDataError, atomic_path, atomic_write
from .inputs import FailedInput
from .readers import count_spectra, expand_inputs, read_spectra

OUTPUT_FORMATS = {".ecsv": "ascii.ecsv", ".fits": "fits", ".csv": "ascii.csv", ".h5": "hdf5", ".hdf5": "hdf5"}
H5_TABLE_PATH = "predictions"
PARTIAL_SUFFIX = ".partial"
MAX_LISTED = 10
TEXT_COLUMNS = ("source", "name", "flags", "notes", "error")


@dataclass(frozen=True)
class Unit:
    """Spectra ``start:stop`` of input file number ``file`` (stop -1: the file failed to open)."""

    file: int
    start: int
    stop: int


@dataclass
class RunSummary:
    output: Path
    n_rows: int
    n_failed: int
    n_chunks: int
    chunks_reused: int
    first_failures: list[tuple[str, str]]  # (source, reason) of up to MAX_LISTED failed rows, in order


def output_format(path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(f"{path}: output must end in {', '.join(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[suffix]


def plan_chunks(files: list[Path], chunk_size: int) -> tuple[list[list[Unit]], dict[int, str]]:
    """Group the spectra of ``files`` into chunks of at most ``chunk_size`` spectra, in input order.

    Returns the chunks and ``{file index: reason}`` for files that cannot be opened (each of those
    becomes one failed row in the output).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    units, failed = [], {}
    for i, path in enumerate(files):
        try:
            n = count_spectra(path)
        except RemapDataError as err:
            failed[i] = err.problem
            units.append(Unit(i, 0, -1))
            continue
        units += [Unit(i, s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    chunks, current, size = [], [], 0
    for unit in units:
        n = 1 if unit.stop < 0 else unit.stop - unit.start
        if current and size + n > chunk_size:
            chunks.append(current)
            current, size = [], 0
        current.append(unit)
        size += n
    if current:
        chunks.append(current)
    return chunks, failed


def _fingerprint(files, predictor, options: dict) -> dict:
    stats = [(str(Path(f).resolve()), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    fingerprint = {"inputs": stats, "model_sha256": predictor.sha256, "members": len(predictor.networks),
                   "options": options}
    return json.loads(json.dumps(fingerprint))  # as it reads back from the manifest (tuples become lists)


def _read_chunk(files, units, failed):
    items = []
    for u in units:
        if u.stop < 0:
            items.append(FailedInput(str(files[u.file]), failed[u.file]))
            continue
        try:
            got = read_spectra(files[u.file], u.start, u.stop)
        except RemapDataError as err:
            items += [FailedInput(str(files[u.file]), err.problem)] * (u.stop - u.start)
            continue
        items += got if isinstance(got, list) else [got]
    return items


def _table_to_columns(table) -> dict[str, np.ndarray]:
    return {name: np.asarray(table[name]) for name in table.colnames}


def _save_chunk(path: Path, table) -> None:
    with atomic_write(path) as fh:
        np.savez(fh, **_table_to_columns(table))


def _load_chunk(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _distributed():
    """(rank, world size, barrier) from torchrun's environment; (0, 1, no-op) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, lambda: None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")  # a barrier is all we need; gloo works beside CUDA too
    return dist.get_rank(), world, dist.barrier


def predict_files(inputs, output, model=None, *, chunk_size: int = 4096, pmf: bool = False,
                  medium: str | None = None, resolution: float | None = None, fwhm: float | None = None,
                  device: str | None = None, batch_size: int = 256, members: int | None = None,
                  workers: int = 1, progress: bool = True, predictor=None) -> RunSummary | None:
    """Predict every spectrum in ``inputs`` (files, directories, globs) into ``output``.

    ``output`` ends in .ecsv, .fits, .csv or .h5. See the module docstring for resuming and
    sharding. ``workers`` threads read and preprocess upcoming chunks while the network runs
    (0: everything in the calling thread). Returns a :class:`RunSummary` on the rank that wrote
    the output, None on the other ranks.
    """
    from tqdm.auto import tqdm

    from .inference import Predictor

    output = Path(output)
    fmt = output_format(output)
    if pmf and fmt == "ascii.csv":
        raise ValueError(f"{output}: CSV has no array columns; write PMFs to .ecsv, .fits or .h5")
    files = expand_inputs(inputs)
    rank, world, barrier = _distributed()
    if device is None:
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if _cuda() else "cpu"
    predictor = predictor or Predictor(model, device=device, batch_size=batch_size, members=members)
    options = {"chunk_size": chunk_size, "pmf": pmf, "medium": medium, "resolution": resolution, "fwhm": fwhm}
    chunks, failed = plan_chunks(files, chunk_size)
    partial = output.with_name(output.name + PARTIAL_SUFFIX)
    manifest = partial / "manifest.json"
    fingerprint = _fingerprint(files, predictor, options)
    if rank == 0:
        if manifest.exists() and json.loads(manifest.read_text()) != fingerprint:
            shutil.rmtree(partial)  # inputs, model or options changed: earlier chunks are not ours
            if progress:
                print(f"{partial}: inputs, model or options changed since the interrupted run; starting afresh")
        partial.mkdir(parents=True, exist_ok=True)
        if not manifest.exists():
            with atomic_write(manifest, "w") as fh:
                json.dump(fingerprint, fh)
    barrier()

    def chunk_path(k: int) -> Path:
        return partial / f"chunk_{k:06d}.npz"

    mine = [k for k in range(len(chunks)) if k % world == rank]
    todo = [k for k in mine if not chunk_path(k).exists()]
    reused = len(mine) - len(todo)

    def prepared(k):
        return predictor.prepare(_read_chunk(files, chunks[k], failed), medium, resolution, fwhm)

    bar = tqdm(total=sum(_chunk_rows(chunks[k]) for k in mine), disable=not progress, unit="spectra",
               desc=f"predict{'' if world == 1 else f' rank {rank}'}")
    bar.update(sum(_chunk_rows(chunks[k]) for k in mine if k not in todo))
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        # Read ahead ``workers`` chunks so disk and preprocessing overlap the network.
        pending = {}
        for k in todo[:max(workers, 0)]:
            pending[k] = pool.submit(prepared, k)
        for j, k in enumerate(todo):
            prep = pending.pop(k).result() if k in pending else prepared(k)
            if workers > 0 and j + workers < len(todo):
                nxt = todo[j + workers]
                pending[nxt] = pool.submit(prepared, nxt)
            _save_chunk(chunk_path(k), predictor.predict_prepared(prep, pmf))
            bar.update(len(prep.flux))
    bar.close()
    barrier()
    if rank != 0:
        barrier()
        return None
    summary = _merge(output, fmt, [chunk_path(k) for k in range(len(chunks))], predictor.table_meta(pmf),
                     reused)
    shutil.rmtree(partial)
    barrier()
    return summary


def _chunk_rows(units) -> int:
    return sum(1 if u.stop < 0 else u.stop - u.start for u in units)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _merge(output: Path, fmt: str, chunk_files: list[Path], meta: dict, reused: int) -> RunSummary:
    """Join the chunk files into ``output`` atomically; .h5 is appended chunk by chunk."""
    n_rows = n_failed = 0
    first: list[tuple[str, str]] = []
    if fmt == "hdf5":
        import h5py

        with atomic_path(output) as tmp, h5py.File(tmp, "w") as h5:
            dset = None
            for path in chunk_files:
                cols = _load_chunk(path)
                rec = _records(cols)
                if dset is None:
                    dset = h5.create_dataset(H5_TABLE_PATH, shape=(0,), maxshape=(None,), dtype=rec.dtype,
                                             chunks=True, compression="gzip", compression_opts=1)
                elif rec.dtype != dset.dtype:  # strings may be longer in a later chunk
                    rec = rec.astype(_widen(dset.dtype, rec.dtype))
                    if rec.dtype != dset.dtype:
                        dset = _regrow(h5, dset, rec.dtype)
                dset.resize((dset.shape[0] + len(rec),))
                dset[-len(rec):] = rec
                n_rows += len(rec)
                failed = cols["error"] != ""
                n_failed += int(failed.sum())
                first += list(zip(cols["source"][failed], cols["error"][failed], strict=True))[:MAX_LISTED - len(first)]
            dset.attrs["meta"] = json.dumps(meta, default=str)
            dset.attrs["units"] = json.dumps(_units())
    else:
        from astropy.table import Table, vstack

        tables = [Table(_load_chunk(p)) for p in chunk_files]
        table = vstack(tables) if tables else Table()
        for name, unit in _units().items():
            if name in table.colnames:
                table[name].unit = None if fmt == "fits" and unit == "dex" else unit
        table.meta.update({k: v for k, v in meta.items() if fmt != "ascii.csv"})
        n_rows = len(table)
        failed = np.asarray(table["error"]) != "" if n_rows else np.zeros(0, bool)
        n_failed = int(failed.sum())
        first = list(zip(np.asarray(table["source"])[failed], np.asarray(table["error"])[failed], strict=True))
        first = first[:MAX_LISTED]
        with atomic_path(output) as tmp:
            if fmt == "fits":  # FITS keywords are 8 characters: keep the metadata as one JSON card
                table.meta = {"REMAPMET": json.dumps(meta, default=str)}
            table.write(tmp, format=fmt, overwrite=True)
    return RunSummary(output, n_rows, n_failed, len(chunk_files), reused, [(str(a), str(b)) for a, b in first])


def _units() -> dict[str, str]:
    """Units of the estimate columns, from their names (text and FITS outputs may not keep them)."""
    from .dataset import LABEL_NAMES, LABEL_UNITS
    from .inference import ESTIMATES

    return {f"{n}_{k}": u for n, u in zip(LABEL_NAMES, LABEL_UNITS, strict=True) for k in ESTIMATES}


def _records(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Columns as one structured array (strings as UTF-8 bytes, as HDF5 and astropy expect)."""
    fields, arrays = [], []
    for name, values in cols.items():
        if values.dtype.kind == "U":
            values = np.char.encode(values, "utf-8")
            width = max(int(values.dtype.itemsize), 1)
            values = values.astype(f"S{width}")
        fields.append((name, values.dtype, values.shape[1:]) if values.ndim > 1 else (name, values.dtype))
        arrays.append(values)
    rec = np.empty(len(arrays[0]) if arrays else 0, dtype=fields)
    for (name, *_), values in zip(fields, arrays, strict=True):
        rec[name] = values
    return rec


def _widen(a: np.dtype, b: np.dtype) -> np.dtype:
    """A record dtype whose string fields are wide enough for both ``a`` and ``b``."""
    fields = []
    for name in a.names:
        fa, fb = a.fields[name][0], b.fields[name][0]
        if fa.kind == "S":
            fields.append((name, f"S{max(fa.itemsize, fb.itemsize)}"))
        else:
            fields.append((name, fa.base, fa.shape) if fa.shape else (name, fa))
    return np.dtype(fields)


def _regrow(h5, dset, dtype):
    """Copy ``dset`` into a new dataset with wider string fields (rare: only when names get longer)."""
    old = dset[...].astype(dtype)
    attrs = dict(dset.attrs)
    del h5[H5_TABLE_PATH]
    new = h5.create_dataset(H5_TABLE_PATH, data=old, maxshape=(None,), chunks=True, compression="gzip",
                            compression_opts=1)
    for k, v in attrs.items():
        new.attrs[k] = v
    return new


def read_predictions(path):
    """Read an output of :func:`predict_files` (any format) back as an astropy Table with units."""
    from astropy.table import Table

    path = Path(path)
    fmt = output_format(path)
    if fmt != "hdf5":
        table = Table.read(path, format=fmt)
        for name in TEXT_COLUMNS:  # text formats read empty strings back as masked (or typeless) entries
            if name in table.colnames and (hasattr(table[name], "mask") or table[name].dtype.kind != "U"):
                col = table[name]
                values = np.asarray(col.filled("") if hasattr(col, "filled") and col.dtype.kind == "U" else col)
                masked = np.asarray(getattr(col, "mask", np.zeros(len(col), bool)), bool)
                table[name] = np.where(masked, "", values.astype(str))
        for name, unit in _units().items():
            if name in table.colnames:
                table[name].unit = unit
        if fmt == "fits" and "REMAPMET" in table.meta:
            table.meta = json.loads(table.meta["REMAPMET"])
        return table
    import h5py

    with h5py.File(path, "r") as h5:
        data = h5[H5_TABLE_PATH][...]
        meta = json.loads(h5[H5_TABLE_PATH].attrs.get("meta", "{}"))
        units = json.loads(h5[H5_TABLE_PATH].attrs.get("units", "{}"))
    table = Table(data)
    for name in table.colnames:
        if table[name].dtype.kind == "S":
            table[name] = np.char.decode(np.asarray(table[name]), "utf-8")
        if name in units:
            table[name].unit = units[name]
    table.meta.update(meta)
    return table
