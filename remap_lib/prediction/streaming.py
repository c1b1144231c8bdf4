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
import glob
import json
import shlex
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from remap_lib.distributed import init_distributed, torchrun_env
from remap_lib.fileio import RemapDataError, atomic_write
from remap_lib.prediction.checkpoints import (
    Checkpoints,
    discard,
    kept_rows,
    load_part,
    manifest_digest,
    parts_by_chunk,
    run_digest,
    run_fingerprint,
    usable_parts,
)
from remap_lib.prediction.outputguard import (
    OutputError,
    OutputLock,
    OutputRefused,
    WriteFailed,
    check_output_path,
    describe_os_error,
    recorded_digest,
)
from remap_lib.prediction.tables import output_format, write_predictions
from remap_lib.spectra.inputfiles import find_inputs
from remap_lib.spectra.inputs import FailedInput
from remap_lib.spectra.readers import StoreSpectra, count_spectra, read_spectra

PARTIAL_SUFFIX = ".partial"
SLICE_ROWS = 1024  # spectra per network call between checkpoints (or batch_size, if larger)


class PredictInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped :func:`predict_files`; the message says what was kept and how to resume."""


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
    fingerprint = run_fingerprint(files, predictor, options)
    digest = run_digest(fingerprint)
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
        except WriteFailed as err:
            raise OutputError(f"{err}; {_stopped(partial, total, world)}") from err.err
        summary.rows_reused, summary.skipped = reused[1], skipped
        try:
            discard(partial)
        except OSError as err:  # the output is complete; only the checkpoints stay behind
            print(f"remap: warning: could not remove {partial} ({describe_os_error(err)}); "
                  f"`rm -r {shlex.quote(str(partial))}` removes it")
        barrier()
        return summary


def _start_partial(output: Path, fmt: str, partial: Path, fingerprint: dict, digest: str, overwrite: bool,
                   progress: bool) -> None:
    """Under the lock: refuse to replace a file that is not ours, then resume or start the partial folder."""
    manifest = partial / "manifest.json"
    resumable = manifest_digest(manifest) == digest
    if output.exists() and not overwrite and not resumable and recorded_digest(output, fmt) != digest:
        raise OutputRefused(f"{output}: already exists; pass --overwrite (overwrite=True) to replace it, or choose "
                            "another output file")
    _remove_stale_temporaries(output, partial)
    if partial.exists() and not resumable:
        if progress and kept_rows(partial)[0]:
            print(f"{partial}: inputs, model or options changed since the interrupted run; starting afresh")
        if partial.is_dir():
            discard(partial)  # inputs, model or options changed, or no manifest: those chunks are not ours
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
    done, reused_parts, found = {}, 0, parts_by_chunk(partial)
    for k in mine:
        parts, done[k] = usable_parts(found.get(k, []), k, _chunk_rows(chunks[k]), digest)
        reused_parts += len(parts)
    todo = [k for k in mine if done[k] < _chunk_rows(chunks[k])]
    slice_rows = max(int(predictor.batch_size), SLICE_ROWS)

    def prepared(k):
        return predictor.prepare(_read_chunk(files, chunks[k], failed), medium, resolution, fwhm, rv)

    bar = tqdm(total=sum(_chunk_rows(chunks[k]) for k in mine), disable=not progress, unit="spectra",
               desc=f"predict{'' if world == 1 else f' rank {rank}'}")
    bar.update(sum(done.values()))
    checkpoints = Checkpoints(partial, digest, save_every)
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
    paths, found = [], parts_by_chunk(partial)
    for k, units in enumerate(chunks):
        parts, done = usable_parts(found.get(k, []), k, _chunk_rows(units), digest)
        if done != _chunk_rows(units):
            raise OutputError(f"{partial}: chunk {k} lacks rows {done}-{_chunk_rows(units)} (a rank stopped "
                              "early?); rerun the same command to finish it")
        paths += parts
    return paths


def _stopped(partial: Path, total: int, world: int) -> str:
    """What a stopped run kept and how to go on; removes the partial folder when it kept nothing."""
    n_parts, n_rows = kept_rows(partial)
    if n_parts:
        return (f"rerun the same command to resume ({n_parts} chunk{'s' if n_parts != 1 else ''} kept: "
                f"{n_rows} of {total} spectra done); `rm -r {shlex.quote(str(partial))}` discards them")
    if world == 1:
        with contextlib.suppress(OSError):
            discard(partial)
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
        n_rows, n_failed, first = write_predictions(output, fmt, (load_part(p) for p in chunk_files), meta)
    except OSError as err:
        raise WriteFailed(output, err) from err
    return RunSummary(output, n_rows, n_failed, n_chunks, reused, first)


