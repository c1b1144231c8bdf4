"""The evaluation study: every method cross-validated on the same folds, over several seeds (issue 11).

The matrix is row × seed × fold. Each fine-tuned row trains on the fold's ``finetune`` stars, fits
its temperatures (or, for point estimators, its interval width) on the fold's ``temperature`` stars
and predicts the held-out fold and every giant candidate (:mod:`remap_lib.evaluation.folds`): each dwarf is
predicted by a model that never saw it, calibration included. The aggregation
(:mod:`remap_lib.evaluation.studystats`) pools the five held-out folds into one prediction per dwarf and seed
(table ``cv_dwarfs``); ``calibration_stars`` is that same cross-validated prediction restricted to
the 30 calibration stars of the committed splits (the paper's protocol, but no longer a fixed
train/test split); ``giants`` scores the giant candidates, which no row ever trains on.

Rows: :mod:`remap_lib.evaluation.studyrows` (what each compares and its reference).

Seeds: run seed s fine-tunes member k with seed ``100 s + k`` (replicates never share a member) and,
where a row pretrains, pretrains with seed s. Results: one JSON record per run under
``results/study/runs/<row>/seed<s>_fold<k>.json`` (:func:`remap_lib.evaluation.studyruns.run_task` runs
one and says what it records), and one per pretraining under ``results/study/pretrain/<row>/seed<s>.json``,
with that network's predictions for the grid's held-out nodes at S/N 50
(:mod:`remap_lib.evaluation.studynodes`); scratch (checkpoints, the reduced rows' pretrained networks,
claims) under ``work/<profile>/study``. Runs resume:
finished ones are skipped, a killed one resumes from its Trainer checkpoints, and several
processes can share the matrix (:mod:`remap_lib.evaluation.runqueue`).

Commands (each ``nice -n 19`` on a shared machine)::

    remap study run [--rows NAME ...] [--seeds 0-4] [--folds 5] [--device cpu|cuda] [--max-minutes M]
    remap study status        # runs done / running / left per row; measured time per run; hours left
    remap study aggregate     # results/study.json (remap_lib.evaluation.studystats)
    remap study table         # that aggregate as Markdown tables (remap_lib.evaluation.studyreport)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from remap_lib.data.dataset import SpectraSet, read_dataset
from remap_lib.evaluation import runqueue
from remap_lib.evaluation.folds import fold_ids, giant_folds, make_folds, n_folds, read_folds, write_folds
from remap_lib.evaluation.studybudgets import Budgets
from remap_lib.evaluation.studyrows import (
    ROW_BY_NAME,
    ROWS,
    RUN_ORDER,
    Row,
    run_row,
    unknown_row,
)
from remap_lib.evaluation.studyruns import run_task
from remap_lib.evaluation.studystatus import print_status, status
from remap_lib.fileio import sha256_file
from remap_lib.nn.modelfile import load_model
from remap_lib.paths import RESULTS_DIR, work_dir
from remap_lib.training.fingerprint import data_sha256
from remap_lib.training.profiles import resolve

DEFAULT_OUT = RESULTS_DIR / "study"
#: The data-hash key of the grid degraded with the pixel in the LSF (rows with ``pixel_in_lsf``).
PIXEL_LSF_KEY = "synthetic_pixel_in_lsf"


# -------------------------------------------------------------------------------------------- context
class MissingNetwork(FileNotFoundError):
    """A row's start network does not exist (yet): its runs are left for a later `remap study run`."""


@dataclass
class Study:
    """Everything a run reads: data, folds, start networks, budgets and where things go."""

    miles: SpectraSet  # MILES stars (at least the dwarfs of the folds and the giant candidates)
    synthetic: SpectraSet  # the whole synthetic grid (rows with meta 'split' == 'train' are pretrained on)
    folds: pd.DataFrame
    giants: list[str]
    budgets: Budgets
    pretrained: dict[str, Path]  # "deep-remap" and "mse" start networks of the default budget
    out: Path  # records
    work: Path  # checkpoints, reduced pretrained networks, claims
    device: str = "cpu"
    progress: bool = True
    profile: str | None = None  # where to look for a start network that was missing (None: nowhere)
    hashes: dict = field(default_factory=dict)
    #: builds the grid degraded with the pixel in the LSF (rows with ``pixel_in_lsf``), on first use
    pixel_lsf_synthetic: Callable[[], SpectraSet] | None = None

    def __post_init__(self):
        self.out, self.work = Path(self.out), Path(self.work)
        self._pixel_lsf = None
        self._index = {str(i): j for j, i in enumerate(self.miles.ids)}
        missing = [i for i in [*self.folds["id"], *self.giants] if i not in self._index]
        if missing:
            raise ValueError(f"{len(missing)} stars of the folds/giants are not in the MILES set: {missing[:5]}")
        if not self.hashes:
            self.hashes = {"miles": data_sha256(self.miles), "synthetic": data_sha256(self.synthetic),
                           "folds": _frame_sha256(self.folds),
                           **{h: v for k, p in self.pretrained.items() for h, v in _network_hashes(k, p).items()}}

    def start_network(self, kind: str) -> Path:
        """The default budget's pretrained ``kind`` network ('deep-remap' or 'mse').

        Looked up again when it was missing at the start (a long run may outlive its arrival);
        :class:`MissingNetwork` if there is still none.
        """
        if kind not in self.pretrained and self.profile is not None:
            from remap_lib.data.pretrained import find_pretrained

            found = find_pretrained(self.profile, kind, required=False)
            if found is not None:
                self.pretrained[kind] = found.path
                self.hashes |= _network_hashes(kind, found.path)
        if kind not in self.pretrained:
            raise MissingNetwork(f"no pretrained {kind} network for the default budget: run notebook 02 "
                                 "(`remap book run 02_pretrain`) or wait for the shipped one")
        return self.pretrained[kind]

    def hashes_for(self, row: Row) -> dict:
        """The inputs a row's runs read, by sha256: MILES and the folds always, and the start network or grid."""
        start = {"ensemble": "pretrained_deep-remap", "mse": "pretrained_mse"}.get(row.kind)
        keys = ["miles", "folds"] + ([start, f"{start}_weights"] if start else []) \
            + {"chi2": ["synthetic"], "reduced": ["synthetic"]}.get(row.kind, [])
        if row.rehearsal:
            keys.append("synthetic")
        if row.pixel_in_lsf and "synthetic" in keys:
            self.synthetic_for(row)  # its hash is known once it is built
            keys = [PIXEL_LSF_KEY if k == "synthetic" else k for k in keys]
        return {k: self.hashes.get(k) for k in keys}

    @property
    def k(self) -> int:
        return n_folds(self.folds)

    @property
    def claims(self) -> Path:
        return self.work / "claims"

    def stars(self, ids) -> SpectraSet:
        return self.miles.select(np.array([self._index[str(i)] for i in ids], dtype=int))

    def fold_sets(self, fold: int, giants_held_out: bool = False) -> dict[str, SpectraSet]:
        """Fold ``fold``'s stars by use; ``giants``: every giant candidate, or with ``giants_held_out``
        only fold ``fold``'s (:func:`~remap_lib.evaluation.folds.giant_folds`), the others then in
        ``distill`` (their spectra, for rows that learn from them without labels)."""
        sets = {use: self.stars(fold_ids(self.folds, fold, use)) for use in ("finetune", "temperature", "test")}
        if not giants_held_out:
            sets["giants"] = self.stars(self.giants)
            return sets
        of = giant_folds(self.giants, self.k)
        sets["giants"] = self.stars([g for g in self.giants if of[str(g)] == fold])
        sets["distill"] = self.stars([g for g in self.giants if of[str(g)] != fold])
        return sets

    def synthetic_for(self, row: Row | None = None) -> SpectraSet:
        """The synthetic grid ``row`` learns from: the training file's, or for ``pixel_in_lsf`` rows the same
        nodes degraded with the pixel in the LSF (built once, checked to hold the same nodes and split)."""
        if row is None or not row.pixel_in_lsf:
            return self.synthetic
        if self._pixel_lsf is None:
            if self.pixel_lsf_synthetic is None:
                raise ValueError(f"row {row.name!r} needs the grid degraded with the pixel in the LSF, and this "
                                 "study has no way to build it")
            variant = self.pixel_lsf_synthetic()
            same = np.array_equal(variant.ids, self.synthetic.ids) and np.array_equal(
                np.asarray(variant.meta.get("split")), np.asarray(self.synthetic.meta.get("split")))
            if not same or _grid_source(variant) != _grid_source(self.synthetic):
                raise ValueError("the grid degraded with the pixel in the LSF does not hold the training file's "
                                 "grid, nodes and split: rewrite the training files (notebook 01) with the "
                                 "profile's parameters")
            self._pixel_lsf = variant
            self.hashes[PIXEL_LSF_KEY] = data_sha256(variant)
        return self._pixel_lsf

    def synthetic_train(self, row: Row | None = None) -> SpectraSet:
        synthetic = self.synthetic_for(row)
        split = synthetic.meta.get("split", np.full(len(synthetic), "train"))
        return synthetic.select(np.asarray(split) == "train")

    def pretrained_path(self, row: Row, seed: int) -> Path:
        return self.work / "pretrain" / row.slug / f"seed{seed}.pt"


def _grid_source(data: SpectraSet) -> str:
    """The synthetic grid a set was degraded from, as comparable text (its provenance, JSON round-trip safe)."""
    return json.dumps(data.provenance.get("grid"), sort_keys=True, default=str)


def _network_hashes(kind: str, path: Path) -> dict[str, str]:
    """The start network's file and its weights, by sha256: two copies of one network (the shipped
    file and one a notebook wrote) differ in the file's creation stamp but share their weights."""
    return {f"pretrained_{kind}": sha256_file(path),
            f"pretrained_{kind}_weights": load_model(path)[1]["weights_sha256"]}


def _frame_sha256(frame: pd.DataFrame) -> str:
    import hashlib

    return hashlib.sha256(frame.to_csv(index=False, float_format="%.10g").encode()).hexdigest()


def load_study(profile: str = "default", out=DEFAULT_OUT, k: int = 5, fold_seed: int = 0, device: str = "cpu",
               threads: int = 1, progress: bool = True) -> Study:
    """The study of ``profile``'s training files, with the fold table in ``out`` (written when missing)."""
    from remap_lib.data.pretrained import find_pretrained
    from remap_lib.data.splits import DEFAULT_SPLITS, read_splits
    from remap_lib.training.trainsets import prepared

    out = Path(out)
    splits = read_splits(DEFAULT_SPLITS)
    folds_file = out / "folds.csv"
    if folds_file.is_file():
        folds = read_folds(folds_file)
        if n_folds(folds) != k:
            raise ValueError(f"{folds_file} has {n_folds(folds)} folds, not {k}: use another --out for another K")
    else:
        folds = make_folds(splits, k, fold_seed)
        write_folds(folds, folds_file, fold_seed, note=f"from {DEFAULT_SPLITS.name}; written by `remap study run`")
    files = prepared(profile, progress=progress)
    # rows that do not start from them (baselines, reduced budget) can run before the networks exist
    found = {kind: find_pretrained(profile, kind, required=False) for kind in ("deep-remap", "mse")}
    start = {kind: net.path for kind, net in found.items() if net is not None}
    giants = splits.loc[splits["role"] == "giant_candidate", "id"].tolist()
    synthetic = read_dataset(files["synthetic"])

    def pixel_lsf_synthetic() -> SpectraSet:  # the same nodes as notebook 01 writes, degraded the other way
        from remap_lib.training.trainsets import synthetic_set

        params = resolve("prepare", profile)
        return synthetic_set(synthetic.instrument, max_spectra=params.get("max_grid_spectra"),
                             test_fraction=params["test_fraction"], val_fraction=params["val_fraction"],
                             pixel_in_lsf=True)

    return Study(read_dataset(files["miles"]), synthetic, folds, giants,
                 Budgets.from_profiles(profile, threads), start, out, work_dir(profile) / "study", device, progress,
                 profile, pixel_lsf_synthetic=pixel_lsf_synthetic)


# -------------------------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class Task:
    key: str
    row: Row
    seed: int
    fold: int | None  # None: the pretraining a row's folds share
    needs: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "pretrain" if self.fold is None else self.row.kind

    def done(self, study: Study) -> bool:
        if self.fold is None:  # its network must exist as well: the folds read it
            return runqueue.is_done(study.out, self.key) and study.pretrained_path(self.row, self.seed).is_file()
        return runqueue.is_done(study.out, self.key)


def run_key(row: Row, seed: int, fold: int) -> str:
    return f"runs/{row.slug}/seed{seed}_fold{fold}"


def plan(rows, seeds, k: int) -> list[Task]:
    """The tasks of ``rows`` × ``seeds`` × folds, seed by seed, cheapest rows first.

    Derived rows come with their source row's runs; deterministic rows run once, as seed 0.
    """
    by_slug = {r.slug: r.name for r in ROWS}  # "no_swa" for "no SWA": names without quoting on a command line
    wanted = {r if r in ROW_BY_NAME else by_slug.get(r) or unknown_row(r) for r in rows}
    wanted = {run_row(r) for r in wanted}
    tasks: list[Task] = []
    for n, seed in enumerate(seeds):
        for name in RUN_ORDER:
            row = ROW_BY_NAME[name]
            if name not in wanted or (row.seeds == "none" and n > 0):
                continue
            s = 0 if row.seeds == "none" else seed
            needs: tuple[str, ...] = ()
            if row.pretrains:
                tasks.append(Task(f"pretrain/{row.slug}/seed{s}", row, s, None))
                needs = (tasks[-1].key,)
            tasks += [Task(run_key(row, s, f), row, s, f, needs) for f in range(k)]
    return tasks


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,5' -> [0, 2, 5]."""
    seeds: list[int] = []
    for part in str(text).split(","):
        lo, _, hi = part.strip().partition("-")
        seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return sorted(set(seeds))


def run_study(study: Study, tasks: list[Task], max_minutes: float | None = None, poll_s: float = 20.0) -> dict:
    """Do every unfinished task (several processes may share the list); returns counts.

    Always takes the first task (in plan order) that is unfinished, unclaimed and whose pretraining
    is done; waits while the remaining ones are held by other live processes. Starts no new task
    after ``max_minutes``.
    """
    _check_folds(study)
    start, ran, skipped = time.monotonic(), 0, []
    todo = [t for t in tasks if not _skippable(study, t, tasks)]
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="study", unit="run",
               disable=not study.progress)
    while todo:
        if max_minutes is not None and time.monotonic() - start > 60 * max_minutes:
            break
        task = next((t for t in todo if all(_dep_done(study, d, tasks) for d in t.needs)
                     and runqueue.try_claim(study.claims, t.key)), None)
        if task is None:
            time.sleep(poll_s)
        else:
            try:
                if not task.done(study):  # another process may have finished it since we looked
                    bar.set_postfix_str(task.key, refresh=True)
                    run_task(study, task)
                    ran += 1
            except MissingNetwork as err:
                skipped.append(task.key)
                tqdm.write(f"{task.key}: skipped ({err})")
            finally:
                runqueue.release(study.claims, task.key)
        todo = [t for t in todo if not _skippable(study, t, tasks) and t.key not in skipped]
        bar.n = len(tasks) - len(todo)
        bar.refresh()
    bar.close()
    return {"ran": ran, "left": len(todo) + len(skipped), "skipped": skipped}


def _check_folds(study: Study) -> None:
    """The records in ``out`` belong to one fold table, kept beside them: write it, or make sure it is ours."""
    path = study.out / "folds.csv"
    if not path.is_file():
        write_folds(study.folds, path, note="written by remap_lib.evaluation.study.run_study")
    elif _frame_sha256(read_folds(path)) != _frame_sha256(study.folds):
        raise ValueError(f"{path} holds other folds than this study's: its records would mix two fold tables")


def _dep_done(study: Study, key: str, tasks: list[Task]) -> bool:
    return next(t for t in tasks if t.key == key).done(study)


def _skippable(study: Study, task: Task, tasks: list[Task]) -> bool:
    """Done, or a recorded pretraining whose every run is already done (a fresh clone needs no networks).

    A pretraining without its record (removed, say, to add what records now hold) runs again.
    """
    if task.done(study):
        return True
    return (task.fold is None and runqueue.is_done(study.out, task.key)
            and all(t.done(study) for t in tasks if task.key in t.needs))


# -------------------------------------------------------------------------------------------- command
def command(args) -> int:
    """``remap study run | status | aggregate | table | goals`` (options in remap_lib/cli.py)."""
    from remap_lib.evaluation.studystats import aggregate, write_aggregate

    out = Path(args.out or DEFAULT_OUT)
    if args.action == "run":
        study = load_study(args.profile, out, args.folds, args.fold_seed, args.device, args.threads,
                           progress=not args.quiet)
        tasks = plan(args.rows or [r.name for r in ROWS], parse_seeds(args.seeds), study.k)
        repeats = sorted({t.row.name for t in tasks if study.budgets.repeats_reduced(t.row)})
        if repeats:
            print(f"left out under --profile {args.profile}: {', '.join(repeats)} (the reduced rows train that "
                  "network already)")
            tasks = [t for t in tasks if t.row.name not in repeats]
        result = run_study(study, tasks, args.max_minutes)
        print(f"ran {result['ran']} task(s); {result['left']} left (rerun the command to continue)"
              + (f"; {len(result['skipped'])} skipped for want of a start network" if result["skipped"] else ""))
        return 0
    if args.action == "status":
        folds_file = out / "folds.csv"
        k = n_folds(read_folds(folds_file)) if folds_file.is_file() else args.folds
        tasks = plan(args.rows or [r.name for r in ROWS], parse_seeds(args.seeds), k)
        print_status(status(out, work_dir(args.profile) / "study" / "claims", tasks))
        return 0
    if args.action == "table":
        from remap_lib.evaluation.studyreport import headline_markdown, markdown_tables, read_study

        path = Path(args.input or out.parent / "study.json")
        result = read_study(path)
        print(headline_markdown(result, source=str(path)))
        print(markdown_tables(result))
        print("### effects (paired 95 % intervals that exclude zero)\n")
        print("\n".join(f"- {line}" for line in result["effects"]) or "none")
        return 0
    if args.action == "goals":
        from remap_lib.evaluation.nodebound import read_report
        from remap_lib.evaluation.studyreport import goals_markdown, read_study

        print(goals_markdown(read_study(Path(args.input or out.parent / "study.json")), args.row, read_report()))
        return 0
    budgets = Budgets.from_profiles(args.profile).describe()
    result = aggregate(out, read_folds(out / "folds.csv"), budgets, n_boot=args.bootstrap)
    path = write_aggregate(result, args.output or out.parent / "study.json")
    done = {r["name"]: r["n_seeds"] for r in result["rows"]}
    print(f"wrote {path}: complete seeds per row {done}")
    for line in result["effects"]:
        print("  " + line)
    return 0
