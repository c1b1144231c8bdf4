"""Predictions for many files at survey scale: chunked, bounded in memory, resumable, shardable, safe.

:func:`predict_files` reads its inputs in chunks of ``chunk_size`` spectra and predicts each chunk in
slices of about a thousand spectra. Finished rows are saved in ``OUTPUT.partial/`` as checkpoint
files (``chunk_K_A-B.npz``: rows A to B of chunk K, each file written atomically) at the end of every
chunk, at least every ``save_every`` seconds, and on Ctrl-C. When every chunk is there they are
merged into ``OUTPUT``, which is itself written to a temporary name and renamed: the output is
complete or absent, never half-written. A run that is killed (even by SIGKILL) leaves only finished
checkpoints behind, and rerunning the same command continues from them.

Runs cannot corrupt each other or anything else:

* ``OUTPUT`` may not be one of the inputs, nor a file that a later run on the same inputs would read
  back as a spectrum (inside an input directory, or matching an input pattern);
* an existing ``OUTPUT`` is replaced only with ``overwrite=True`` (``--overwrite``), or when it is
  this very run's output (the same inputs, model and options, resumed or rerun);
* a run holds an exclusive lock on ``OUTPUT`` (``.OUTPUT.lock`` beside it, released by the kernel even
  when the process is killed); a second run on the same output is refused with the first one's PID;
* the run's fingerprint (every input's path, size and modification time, the model's sha256 and the
  options) is written atomically in ``OUTPUT.partial/manifest.json`` and into every checkpoint, and
  a checkpoint is used again only when both match: a changed input, model or option starts afresh.

Failures to write (permission denied, disk full, read-only file system) raise :class:`OutputError`
naming the path and the problem, after removing what they would otherwise leave behind; finished
checkpoints are kept, and the message says how to resume or discard them.

Under ``torchrun`` every rank takes the chunks ``k`` with ``k % WORLD_SIZE == RANK`` (on GPU ``k``
uses ``cuda:LOCAL_RANK``); rank 0 holds the lock and merges after a barrier::

    torchrun --standalone --nproc_per_node 4 -m remap_lib.cli predict survey/*.fits -o survey.h5 --device cuda

Memory is bounded by one chunk (plus the merge for ``.ecsv``/``.fits``/``.csv``, which holds the
output table; ``.h5`` output is appended chunk by chunk). Text columns are UTF-8 in every format
(FITS: byte columns holding UTF-8, decoded by :func:`remap_lib.prediction.tables.read_predictions`).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from remap_lib.distributed import init_distributed, torchrun_env
from remap_lib.fileio import RemapDataError, atomic_write
from remap_lib.prediction.tables import (
    H5_TABLE_PATH,
    OUTPUT_FORMATS,
    output_format,
    write_predictions,
)
from remap_lib.spectra.inputs import FailedInput
from remap_lib.spectra.readers import StoreSpectra, count_spectra, find_inputs, has_supported_suffix, read_spectra

PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"
LAYOUT = 2  # of the partial folder; a folder of another layout is never reused
SLICE_ROWS = 1024  # spectra per network call between checkpoints (or batch_size, if larger)
RUN_KEYS = ("__run__", "__chunk__", "__rows__")  # what binds a checkpoint file to its run
_PART_NAME = re.compile(r"chunk_(\d+)_(\d+)-(\d+)\.npz")


class OutputError(Exception):
    """The output cannot be written now: another run holds it, permission denied, disk full (CLI exit 4)."""


class OutputRefused(ValueError):
    """The output path is not acceptable: an input, read back by a later run, an existing file (CLI exit 2)."""


class PredictInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped :func:`predict_files`; the message says what was kept and how to resume."""


class _WriteFailed(Exception):
    def __init__(self, path, err: OSError):
        super().__init__(f"cannot write {path}: {describe_os_error(err)}")
        self.err = err


def describe_os_error(err: OSError) -> str:
    """``No space left on device (ENOSPC)``: the reason and its errno name, for a search engine."""
    code = errno.errorcode.get(err.errno or 0, "")
    return f"{err.strerror or err}{f' ({code})' if code else ''}"


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
    chunks_reused: int  # checkpoint files an interrupted run left and this one used
    first_failures: list[tuple[str, str]]  # (source, reason) of up to tables.MAX_LISTED failed rows, in order
    rows_reused: int = 0  # spectra those checkpoints held
    skipped: list[Path] = field(default_factory=list)  # files of unknown type in input directories


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


# -- where the output may go -----------------------------------------------------------------------
def check_output_path(output, inputs, files) -> None:
    """OutputRefused when ``output`` is a directory, one of ``files``, or would be read back as an input.

    ``inputs`` are the paths, directories and patterns as given, ``files`` what they expanded to.
    """
    output = Path(output)
    if output.is_dir():
        raise OutputRefused(f"{output}: is a directory; the output is a file ending in {', '.join(OUTPUT_FORMATS)}")
    above = next((p for p in output.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise OutputRefused(f"{output}: {above} is a file, not a directory")
    target = output.resolve()
    for f in files:
        if Path(f).resolve() == target or (output.exists() and os.path.samefile(f, output)):
            raise OutputRefused(f"{output}: is one of the inputs; the results would replace that spectrum: "
                                "choose another output file")
    read_back = has_supported_suffix(output) and not output.name.startswith(".")
    for item in [inputs] if isinstance(inputs, str | Path) else inputs:
        path = Path(item)
        if path.is_dir() and read_back and target.parent == path.resolve():
            raise OutputRefused(f"{output}: is inside the input directory {path}, so a later run on it would read "
                                f"the results back as a spectrum: write them outside it, e.g. to "
                                f"{path.resolve().parent / output.name}")
        if (not path.exists() and any(ch in str(item) for ch in "*?[") and read_back
                and Path(os.path.abspath(output)).match(os.path.abspath(item))):
            raise OutputRefused(f"{output}: matches the input pattern {item}, so a later run would read the "
                                "results back as a spectrum: choose an output file the pattern does not match")


class OutputLock:
    """An exclusive lock on an output for one run: ``.NAME.lock`` beside it, holding the run's PID.

    ``fcntl.flock`` locks belong to the open file, so the kernel releases them when the process ends,
    however it ends: a killed run never blocks the next one. Raises :class:`OutputError` naming the
    PID of the run that holds the lock.
    """

    def __init__(self, output):
        self.output = Path(output)
        self.path = self.output.with_name(f".{self.output.name}{LOCK_SUFFIX}")
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(fd)
                os.close(fd)
                raise OutputError(f"{self.output}: another remap predict ({holder}) is writing this output; wait "
                                  "for it to finish, or stop it and rerun (its finished work is kept)") from None
            except BaseException:
                os.close(fd)
                raise
            try:
                ours = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                ours = False
            if ours:
                break
            os.close(fd)  # the previous holder removed the file between our open and our lock: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding it, so no other run can be locking this same file
        os.close(self.fd)
        self.fd = None


def _lock_holder(fd: int) -> str:
    for _ in range(20):  # the holder writes its PID just after locking: give it a moment
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return f"PID {text}"
        time.sleep(0.01)
    return "PID unknown"


def _recorded_digest(output: Path, fmt: str) -> str | None:
    """The run fingerprint an earlier :func:`predict_files` stored in ``output``; None if it has none."""
    try:
        if fmt == "hdf5":
            import h5py

            with h5py.File(output, "r") as h5:
                return json.loads(h5[H5_TABLE_PATH].attrs.get("meta", "{}")).get("run_fingerprint")
        if fmt == "fits":
            from astropy.io import fits

            return json.loads(fits.getheader(output, 1).get("REMAPMET", "{}")).get("run_fingerprint")
        if fmt == "ascii.ecsv":
            with open(output, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if not line.startswith("#"):
                        break
                    found = re.search(r"\brun_fingerprint:\s*['\"]?([0-9a-f]{64})\b", line)
                    if found:
                        return found.group(1)
    except Exception:  # noqa: BLE001 - not one of ours, or damaged: either way it is not this run's output
        return None
    return None


# -- the run's fingerprint and checkpoints --------------------------------------------------------
def _fingerprint(files, predictor, options: dict) -> dict:
    from remap_lib.prediction.inference import _remap_version

    stats = [(str(Path(f).resolve()), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    fingerprint = {"layout": LAYOUT, "remap_version": _remap_version(), "inputs": stats,
                   "model_sha256": predictor.sha256, "members": len(predictor.networks), "options": options}
    return json.loads(json.dumps(fingerprint))  # as it reads back from the manifest (tuples become lists)


def _digest(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def _manifest_digest(manifest: Path) -> str | None:
    try:
        return json.loads(manifest.read_text())["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _part_path(partial: Path, k: int, a: int, b: int) -> Path:
    return partial / f"chunk_{k:06d}_{a:06d}-{b:06d}.npz"


def _parts_by_chunk(partial: Path) -> dict[int, list[tuple[int, int, Path]]]:
    """Checkpoint files in ``partial`` as ``{chunk: [(first row, end row, path), ...]}``, by first row."""
    found: dict[int, list[tuple[int, int, Path]]] = {}
    for path in partial.glob("chunk_*.npz"):  # one listing for all chunks: surveys have many
        m = _PART_NAME.fullmatch(path.name)
        if m:
            found.setdefault(int(m[1]), []).append((int(m[2]), int(m[3]), path))
    return {k: sorted(v) for k, v in found.items()}


def _belongs(path: Path, digest: str, k: int, a: int, b: int) -> bool:
    """Whether the checkpoint at ``path`` is rows ``a:b`` of chunk ``k`` of the run ``digest``."""
    try:
        with np.load(path, allow_pickle=False) as z:  # members load lazily: only the binding is read
            return (str(z["__run__"]) == digest and int(z["__chunk__"]) == k
                    and [int(x) for x in z["__rows__"]] == [a, b] and len(z["source"]) == b - a)
    except Exception:  # noqa: BLE001 - truncated, not a zip, missing keys: all mean "not reusable"
        return False


def _usable_parts(parts, k: int, n_rows: int, digest: str) -> tuple[list[Path], int]:
    """Of ``parts`` (chunk ``k``'s entry of :func:`_parts_by_chunk`) those this run can use, and the rows
    they cover (from 0, without gaps). The others (another run's, after a gap, damaged) are deleted.
    """
    usable, done = [], 0
    for a, b, path in parts:
        if a == done and b <= n_rows and _belongs(path, digest, k, a, b):
            usable.append(path)
            done = b
        else:
            path.unlink(missing_ok=True)
    return usable, done


def _save_part(path: Path, columns: dict[str, np.ndarray], digest: str, k: int, a: int, b: int) -> None:
    try:
        with atomic_write(path) as fh:
            np.savez(fh, __run__=np.array(digest), __chunk__=np.array(k), __rows__=np.array([a, b]), **columns)
    except OSError as err:
        raise _WriteFailed(path, err) from err


def _load_part(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k not in RUN_KEYS}


class _Checkpoints:
    """Finished rows of the chunk in progress, saved as one checkpoint at most every ``save_every`` seconds."""

    def __init__(self, partial: Path, digest: str, save_every: float):
        self.partial, self.digest, self.save_every = partial, digest, save_every
        self.chunk, self.start, self.pieces, self.rows = -1, 0, [], 0
        self.last_save = time.monotonic()

    def begin(self, k: int, start: int) -> None:
        self.chunk, self.start, self.pieces, self.rows = k, start, [], 0

    def add(self, table) -> None:
        self.pieces.append(_table_to_columns(table))
        self.rows += len(table)
        if time.monotonic() - self.last_save >= self.save_every:
            self.save()

    def save(self) -> None:
        if not self.rows:
            return
        columns = {name: _clean_text(np.concatenate([p[name] for p in self.pieces])) for name in self.pieces[0]}
        end = self.start + self.rows
        _save_part(_part_path(self.partial, self.chunk, self.start, end), columns, self.digest, self.chunk,
                   self.start, end)
        self.start, self.pieces, self.rows = end, [], 0
        self.last_save = time.monotonic()


def _clean_text(values: np.ndarray) -> np.ndarray:
    """Text that every output format can hold as UTF-8.

    Under a non-UTF-8 locale Python spells undecodable file-name bytes as lone surrogates, which no
    encoder accepts: they become the UTF-8 text the bytes are (or U+FFFD where they are not UTF-8).
    """
    if values.dtype.kind != "U":
        return values
    try:
        np.char.encode(values, "utf-8")
        return values
    except UnicodeEncodeError:
        return np.array([v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for v in values.ravel()],
                        dtype=str).reshape(values.shape)


def _kept(partial: Path) -> tuple[int, int]:
    """(checkpoint files, spectra in them) in ``partial``."""
    if not partial.is_dir():
        return 0, 0
    spans = [(int(m[2]), int(m[3])) for p in partial.glob("chunk_*.npz") if (m := _PART_NAME.fullmatch(p.name))]
    return len(spans), sum(b - a for a, b in spans)


def _discard(partial: Path) -> None:
    """Remove a partial folder: renamed first, so a run killed half-way never leaves half a folder to resume."""
    if not partial.exists():
        return
    trash = partial.with_name(f".{partial.name}.discarded")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(partial, trash)
    shutil.rmtree(trash)


def _remove_stale_temporaries(output: Path, partial: Path) -> None:
    """Temporary files of killed runs on this output (we hold its lock, so no live run owns them)."""
    stale = list(output.parent.glob(f".{glob.escape(output.name)}.*.part"))
    stale += list(partial.glob(".*.part")) if partial.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    shutil.rmtree(partial.with_name(f".{partial.name}.discarded"), ignore_errors=True)


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
        got = got if isinstance(got, list) else [got]
        n_read = sum(len(g.flux) if isinstance(g, StoreSpectra) else 1 for g in got)
        if n_read != u.stop - u.start:  # the file changed since it was counted: keep the rows where planned
            reason = (f"file changed during the run: expected {u.stop - u.start} spectra from row {u.start}, "
                      f"read {n_read}")
            items += [FailedInput(str(files[u.file]), reason)] * (u.stop - u.start)
            continue
        items += got
    return items


def _table_to_columns(table) -> dict[str, np.ndarray]:
    return {name: np.asarray(table[name]) for name in table.colnames}


def _rows(prep, a: int, b: int):
    """Rows ``a:b`` of a :class:`~remap_lib.prediction.preparation.Prepared`."""
    from dataclasses import replace

    return replace(prep, flux=prep.flux[a:b], mask=prep.mask[a:b], source=prep.source[a:b], name=prep.name[a:b],
                   errors=prep.errors[a:b], notes=prep.notes[a:b], ivar=None if prep.ivar is None else prep.ivar[a:b],
                   rv=None if prep.rv is None else prep.rv[a:b])


def _distributed():
    """(rank, world size, barrier, share) from torchrun's environment; share(x) gives every rank rank 0's x."""
    if torchrun_env()[1] <= 1:
        return 0, 1, lambda: None, lambda obj: obj
    import torch.distributed as dist

    _, world = init_distributed("gloo")  # a barrier is all we need; gloo works beside CUDA too

    def share(obj):
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    return dist.get_rank(), world, dist.barrier, share


# -- the run --------------------------------------------------------------------------------------
def predict_files(inputs, output, model=None, *, chunk_size: int = 4096, pmf: bool = False,
                  medium: str | None = None, resolution: float | None = None, fwhm: float | None = None,
                  rv: float | None = None, device: str | None = None, batch_size: int = 256, members: int | None = None,
                  workers: int = 1, progress: bool = True, predictor=None, overwrite: bool = False,
                  save_every: float = 10.0) -> RunSummary | None:
    """Predict every spectrum in ``inputs`` (files, directories, globs) into ``output``.

    ``rv`` (km/s) shifts every spectrum to the rest frame
    (see :meth:`~remap_lib.prediction.inference.Predictor.prepare`).
    ``output`` ends in .ecsv, .fits, .csv or .h5; an existing file is replaced only with
    ``overwrite=True`` (or when it is this same run's output). See the module docstring for
    resuming, locking and sharding. ``workers`` threads read and preprocess upcoming chunks while the
    network runs (0: everything in the calling thread); finished rows are saved at least every
    ``save_every`` seconds. Returns a :class:`RunSummary` on the rank that wrote the output, None on
    the other ranks. Raises :class:`OutputRefused` (a ValueError) for an unacceptable output path,
    :class:`OutputError` when the output cannot be written and :class:`PredictInterrupted` on Ctrl-C.
    """
    from remap_lib.prediction.inference import Predictor

    output = Path(output)
    fmt = output_format(output)
    if pmf and fmt == "ascii.csv":
        raise ValueError(f"{output}: CSV has no array columns; write PMFs to .ecsv, .fits or .h5")
    if medium not in (None, "air", "vacuum"):
        raise ValueError(f"medium must be 'air' or 'vacuum', got {medium!r}")
    files, skipped = find_inputs(inputs)
    check_output_path(output, inputs, files)
    rank, world, barrier, share = _distributed()
    if device is None:
        device = f"cuda:{torchrun_env()[2]}" if _cuda() else "cpu"
    if predictor is None:
        _check_device(device)
        predictor = Predictor(model, device=device, batch_size=batch_size, members=members)
    predictor.check_lsf(resolution, fwhm)
    predictor.check_rv(rv)
    options = {"chunk_size": chunk_size, "pmf": pmf, "medium": medium, "resolution": resolution, "fwhm": fwhm}
    if rv is not None:  # only when given, so that runs interrupted before --rv existed still resume
        options["rv"] = float(rv)
    chunks, failed = plan_chunks(files, chunk_size)
    fingerprint = _fingerprint(files, predictor, options)
    digest = _digest(fingerprint)
    partial = output.with_name(output.name + PARTIAL_SUFFIX)
    total = sum(_chunk_rows(c) for c in chunks)
    locked = False  # only the run holding the lock may touch the partial folder
    with contextlib.ExitStack() as held:
        try:
            problem = None
            if rank == 0:
                try:
                    held.enter_context(OutputLock(output))
                    locked = True
                    _start_partial(output, fmt, partial, fingerprint, digest, overwrite, progress)
                except (OutputError, OutputRefused) as err:
                    problem = err
                except OSError as err:
                    problem = OutputError(f"cannot write {output}: {describe_os_error(err)}"
                                          + (f"; {_stopped(partial, total, world)}" if locked else ""))
            verdict = share(None if problem is None else (isinstance(problem, OutputError), str(problem)))
            if problem is not None:
                raise problem
            if verdict is not None:
                raise (OutputError if verdict[0] else OutputRefused)(verdict[1])
            reused = _predict_chunks(chunks, files, failed, predictor, partial, digest, rank, world, pmf, medium,
                                     resolution, fwhm, rv, batch_size, workers, save_every, progress)
            barrier()
            if rank != 0:
                barrier()
                return None
            summary = _merge(output, fmt, _all_parts(partial, chunks, digest),
                             {**predictor.table_meta(pmf), "run_fingerprint": digest}, len(chunks), reused[0])
        except KeyboardInterrupt:
            kept = _stopped(partial, total, world) if locked or rank != 0 else "nothing was written"
            raise PredictInterrupted(f"interrupted: {kept}") from None
        except _WriteFailed as err:
            raise OutputError(f"{err}; {_stopped(partial, total, world)}") from err.err
        summary.rows_reused, summary.skipped = reused[1], skipped
        try:
            _discard(partial)
        except OSError as err:  # the output is complete; only the checkpoints stay behind
            print(f"remap: warning: could not remove {partial} ({describe_os_error(err)}); "
                  f"`rm -r {shlex.quote(str(partial))}` removes it")
        barrier()
        return summary


def _start_partial(output: Path, fmt: str, partial: Path, fingerprint: dict, digest: str, overwrite: bool,
                   progress: bool) -> None:
    """Under the lock: refuse to replace a file that is not ours, then resume or start the partial folder."""
    manifest = partial / "manifest.json"
    resumable = _manifest_digest(manifest) == digest
    if output.exists() and not overwrite and not resumable and _recorded_digest(output, fmt) != digest:
        raise OutputRefused(f"{output}: already exists; pass --overwrite (overwrite=True) to replace it, or choose "
                            "another output file")
    _remove_stale_temporaries(output, partial)
    if partial.exists() and not resumable:
        if progress and _kept(partial)[0]:
            print(f"{partial}: inputs, model or options changed since the interrupted run; starting afresh")
        if partial.is_dir():
            _discard(partial)  # inputs, model or options changed, or no manifest: those chunks are not ours
        else:
            raise OutputRefused(f"{partial}: is a file, not remap's folder of finished work; move it away")
    partial.mkdir(parents=True, exist_ok=True)
    if not resumable:
        with atomic_write(manifest, "w") as fh:
            json.dump({"digest": digest, "fingerprint": fingerprint}, fh)


def _predict_chunks(chunks, files, failed, predictor, partial, digest, rank, world, pmf, medium, resolution,
                    fwhm, rv, batch_size, workers, save_every, progress) -> tuple[int, int]:
    """Predict this rank's chunks into checkpoints; (checkpoints reused, spectra in them)."""
    from tqdm.auto import tqdm

    mine = [k for k in range(len(chunks)) if k % world == rank]
    done, reused_parts, found = {}, 0, _parts_by_chunk(partial)
    for k in mine:
        parts, done[k] = _usable_parts(found.get(k, []), k, _chunk_rows(chunks[k]), digest)
        reused_parts += len(parts)
    todo = [k for k in mine if done[k] < _chunk_rows(chunks[k])]
    slice_rows = max(int(predictor.batch_size), SLICE_ROWS)

    def prepared(k):
        return predictor.prepare(_read_chunk(files, chunks[k], failed), medium, resolution, fwhm, rv)

    bar = tqdm(total=sum(_chunk_rows(chunks[k]) for k in mine), disable=not progress, unit="spectra",
               desc=f"predict{'' if world == 1 else f' rank {rank}'}")
    bar.update(sum(done.values()))
    checkpoints = _Checkpoints(partial, digest, save_every)
    pool = ThreadPoolExecutor(max_workers=max(workers, 1))
    try:
        # Read ahead ``workers`` chunks so disk and preprocessing overlap the network.
        pending = {k: pool.submit(prepared, k) for k in todo[:max(workers, 0)]}
        for j, k in enumerate(todo):
            prep = pending.pop(k).result() if k in pending else prepared(k)
            if workers > 0 and j + workers < len(todo):
                nxt = todo[j + workers]
                pending[nxt] = pool.submit(prepared, nxt)
            checkpoints.begin(k, done[k])
            for a in range(done[k], len(prep.flux), slice_rows):
                rows = _rows(prep, a, min(a + slice_rows, len(prep.flux)))
                checkpoints.add(predictor.predict_prepared(rows, pmf))
                bar.update(len(rows.flux))
            checkpoints.save()
    except KeyboardInterrupt:
        with contextlib.suppress(BaseException):  # keep the finished rows; a second Ctrl-C gives them up
            checkpoints.save()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
    return reused_parts, sum(done.values())


def _all_parts(partial: Path, chunks, digest: str) -> list[Path]:
    """Every checkpoint of the run in row order; OutputError if a chunk is not complete."""
    paths, found = [], _parts_by_chunk(partial)
    for k, units in enumerate(chunks):
        parts, done = _usable_parts(found.get(k, []), k, _chunk_rows(units), digest)
        if done != _chunk_rows(units):
            raise OutputError(f"{partial}: chunk {k} lacks rows {done}-{_chunk_rows(units)} (a rank stopped "
                              "early?); rerun the same command to finish it")
        paths += parts
    return paths


def _stopped(partial: Path, total: int, world: int) -> str:
    """What a stopped run kept and how to go on; removes the partial folder when it kept nothing."""
    n_parts, n_rows = _kept(partial)
    if n_parts:
        return (f"rerun the same command to resume ({n_parts} chunk{'s' if n_parts != 1 else ''} kept: "
                f"{n_rows} of {total} spectra done); `rm -r {shlex.quote(str(partial))}` discards them")
    if world == 1:
        with contextlib.suppress(OSError):
            _discard(partial)
    return "no spectrum was finished, nothing was kept"


def _chunk_rows(units) -> int:
    return sum(1 if u.stop < 0 else u.stop - u.start for u in units)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _check_device(device: str) -> None:
    """ValueError for a device torch does not know or this machine does not have."""
    import torch

    try:
        kind = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r} is not one torch knows: use cpu, cuda, cuda:1, mps...") from None
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available here (no GPU, or a CPU-only torch); use "
                             "--device cpu")
        if kind.index is not None and kind.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")


def _merge(output: Path, fmt: str, chunk_files: list[Path], meta: dict, n_chunks: int, reused: int) -> RunSummary:
    """Join the checkpoint files into ``output`` atomically; .h5 is appended chunk by chunk."""
    try:
        n_rows, n_failed, first = write_predictions(output, fmt, (_load_part(p) for p in chunk_files), meta)
    except OSError as err:
        raise _WriteFailed(output, err) from err
    return RunSummary(output, n_rows, n_failed, n_chunks, reused, first)


