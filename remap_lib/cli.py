"""The ``remap`` command: data fetching, grid building and running the book without Jupyter."""

from __future__ import annotations

import argparse
import sys

import yaml

from remap_lib.fileio import RemapDataError
from remap_lib.spectra.instruments import MAX_RV_KMS
from remap_lib.training.profiles import CALIBRATION_METHODS, SWA_BN_ROWS, resolve


def _fetch(args) -> int:
    from remap_lib.data.cache import GES_LINELIST_ARCHIVE, MARCS_ARCHIVE, MILES_ARCHIVE, extract_archive
    from remap_lib.data.sources.sme_grid import MANIFEST, verify_manifest
    from remap_lib.paths import DATA_DIR

    for archive in (MILES_ARCHIVE, MARCS_ARCHIVE, GES_LINELIST_ARCHIVE):
        path = extract_archive(archive)
        print(f"{archive.requirement:24s} ok  {path}")
    if MANIFEST.exists():
        verify_manifest(MANIFEST)
        print(f"{DATA_DIR.name}/{MANIFEST.name}: every shipped file matches its sha256")
    return 0


def _grid_build(args) -> int:
    from remap_lib.data.sources.sme_grid import GRID_FILE, WORK_DIR, build_grid

    result = build_grid(output=args.output or GRID_FILE, workdir=args.workdir or WORK_DIR,
                        workers=args.workers, limit=args.limit, progress=not args.quiet)
    if result is None:
        print("grid incomplete: rerun `remap grid build` to continue where this run stopped")
        return 3
    print(f"grid complete: {result}")
    return 0


def _grid_verify(args) -> int:
    from remap_lib.data.sources.sme_grid import MANIFEST, verify_manifest

    verify_manifest(MANIFEST)
    print(f"{MANIFEST}: all files match")
    return 0


def _book_run(args) -> int:
    from remap_lib.book.notebooks import BOOK_NOTEBOOK_DIR, run_all

    overrides = {key: yaml.safe_load(value) for key, value in args.param}
    for path in run_all(args.profile, args.out or BOOK_NOTEBOOK_DIR, args.notebooks or None, overrides,
                        progress=not args.quiet):
        print(f"executed {path}")
    return 0


def _prepare(args) -> int:
    from remap_lib.training.trainsets import prepare

    paths = prepare(args.profile, instrument=args.instrument, max_grid_spectra=args.max_grid_spectra,
                    max_miles_stars=args.max_miles_stars, seed=args.seed, out_dir=args.out, library=args.library)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _train(args) -> int:
    from remap_lib.training.train import main as train_main

    rest = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    return train_main(rest)


def _work(args):
    from pathlib import Path

    from remap_lib.paths import work_dir

    return work_dir(args.profile) if args.work is None else Path(args.work)


def _predict(args) -> int:
    import signal
    import threading

    from remap_lib.prediction.streaming import OutputError, PredictInterrupted, predict_files
    from remap_lib.spectra.inputfiles import skipped_message

    for stream in (sys.stdout, sys.stderr):  # file names in any script must not crash a summary on an ASCII terminal
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # `kill` keeps finished work, as Ctrl-C does
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        summary = predict_files(args.inputs, args.output, args.model, chunk_size=args.chunk_size, pmf=args.pmf,
                                medium=args.medium, resolution=args.resolution, fwhm=args.fwhm, rv=args.rv,
                                device=args.device,
                                batch_size=args.batch_size, members=args.members, workers=args.workers,
                                progress=not args.quiet, overwrite=args.overwrite)
    except OutputError as err:
        print(f"remap: error: {err}", file=sys.stderr)
        return 4
    except PredictInterrupted as err:
        print(f"remap: {err}", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    if summary is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    reused = (f" (resumed: {summary.rows_reused} spectra in {summary.chunks_reused} chunks kept by an interrupted "
              "run)" if summary.chunks_reused else "")
    skipped = f"; {skipped_message(summary.skipped)}" if summary.skipped else ""
    print(f"wrote {summary.n_rows} rows to {summary.output}{reused}; {summary.n_failed} failed{skipped}")
    if summary.n_failed:
        for source, reason in summary.first_failures:
            print(f"  {source}: {reason}", file=sys.stderr)
        if summary.n_failed > len(summary.first_failures):
            print(f"  ... and {summary.n_failed - len(summary.first_failures)} more (see the error column)",
                  file=sys.stderr)
        return 3
    return 0


def _at_least(low: int):
    """An argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _finetune(args) -> int:
    from remap_lib.data.pretrained import find_pretrained
    from remap_lib.evaluation import pipeline

    work = _work(args)
    overrides = {k: getattr(args, k) for k in ("epochs", "members", "batch_size", "lr", "rehearsal", "noise_snr_min",
                                               "distill", "distill_labels", "swa_bn_rows")
                 if getattr(args, k) is not None}
    pretrained = args.pretrained
    if pretrained is None:
        start = find_pretrained(args.profile, work=work)
        print(f"starting from {start.describe()}")
        pretrained = start.path
    paths = pipeline.finetune(pretrained, args.miles or work / "miles.h5",
                              args.out or work / "finetune", args.profile, args.splits, args.seed,
                              progress=not args.quiet, synthetic_file=args.synthetic, **overrides)
    for path in paths:
        print(f"fine-tuned member: {path}")
    return 0


def _calibrate(args) -> int:
    from remap_lib.constants import LABEL_NAMES
    from remap_lib.evaluation import pipeline

    work = _work(args)
    members = args.members or pipeline.member_files(work / "finetune", calibrated=False)
    paths, temps = pipeline.calibrate(members, args.miles or work / "miles.h5", args.splits, method=args.method)
    for path, t in zip(paths, temps, strict=True):
        print(f"{path}: " + ", ".join(f"T_{n} = {t[n]:.3f}" for n in LABEL_NAMES))
    return 0


def _validate(args) -> int:
    from remap_lib.evaluation import pipeline
    from remap_lib.fileio import write_json

    work = _work(args)
    from remap_lib.constants import GIANT_LOGG

    members = args.members or pipeline.member_files(work / "finetune", calibrated=True)
    report = pipeline.validate(members, args.miles or work / "miles.h5", args.splits)
    table = pipeline.report_table(report)
    cols = ["role", "label", "n", "bias", "sigma", "mad", "coverage_68", "coverage_95", "ece_interval"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if "giant_candidate" in report:
        called = report["giant_candidate"]["fraction_called_giant"]
        print(f"giant candidates called giant (log g < {GIANT_LOGG}): {called:.1%}")
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


def _export(args) -> int:
    from remap_lib.evaluation import pipeline

    work = _work(args)
    members = args.members or pipeline.member_files(work / "finetune", calibrated=True)
    synthetic = args.synthetic or (work / "synthetic.h5" if (work / "synthetic.h5").exists() else None)
    path = pipeline.export(members, args.miles or work / "miles.h5", args.output, args.splits, synthetic)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {len(members)} members)")
    return 0


def _pretrained(args) -> int:
    from remap_lib.data import pretrained

    work = _work(args)
    if args.ship:
        for path in pretrained.ship(args.profile, work):
            print(f"shipped {path} (hashed in data/MANIFEST.sha256)")
        return 0
    verdicts = pretrained.against_shipped(args.profile, work)
    for kind in pretrained.NETWORK_FILES:
        found = pretrained.find_pretrained(args.profile, kind, work=work, required=False)
        print(f"{kind}: {found.describe() if found else 'none (run notebook 02)'}")
        if kind in verdicts:
            print(f"  against the shipped network: {verdicts[kind]}")
    return 0


def _study(args) -> int:
    from remap_lib.evaluation.study import command

    return command(args)


def _book_pages(args) -> int:
    from remap_lib.book import bookpages

    rest = args.page_args[1:] if args.page_args[:1] == ["--"] else args.page_args
    return bookpages.main(rest) or 0


#: Optional packages (top-level module names) and the extra of pyproject.toml that installs them.
EXTRA_OF_MODULE = {"pandas": "train", "matplotlib": "train", "pysme": "train", "thecannon": "train",
                   "papermill": "book", "nbformat": "book", "nbclient": "book", "jupyter_book": "book",
                   "IPython": "book", "specutils": "specutils"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remap", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch", help="download and verify MILES, MARCS and the Gaia-ESO line list")
    p.set_defaults(func=_fetch)

    grid = sub.add_parser("grid", help="the synthetic PySME/MARCS grid").add_subparsers(dest="action", required=True)
    p = grid.add_parser("build", help="synthesize missing nodes (resumable) and assemble the HDF5 grid")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--limit", type=int, default=None, help="synthesize at most this many nodes in this run")
    p.add_argument("--output", default=None, help="grid file (default: data/sme_marcs_ges_r11000.h5)")
    p.add_argument("--workdir", default=None, help="per-node work folder (default: data/sme_grid_work)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_grid_build)
    p = grid.add_parser("verify", help="check the shipped files against data/MANIFEST.sha256")
    p.set_defaults(func=_grid_verify)

    p = sub.add_parser("prepare", help="write the training files (synthetic grid and MILES on one instrument)")
    p.add_argument("--profile", default="default", help="names the output folder work/<profile>")
    p.add_argument("--instrument", default="miles", help="miles, marvels or a YAML instrument profile")
    p.add_argument("--max-grid-spectra", type=int, default=None)
    p.add_argument("--max-miles-stars", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default: work/<profile>)")
    p.add_argument("--library", choices=["sme", "phoenix"], default="sme",
                   help="synthetic spectra: the shipped SME grid (default) or PHOENIX (Husser et al. 2013), "
                        "downloaded into the cache (resumable; $REMAP_PHOENIX_URL for a mirror): 1980 nodes in the "
                        "FGK box, ~6.3 MB each (~12.4 GB); --max-grid-spectra N fetches only N of them")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("train", help="pretrain on a dataset file (see `remap train -- --help`)", add_help=False)
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="arguments of remap_lib.training.train")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "predict", help="Teff, log g and [Fe/H] for your spectra (files, directories, globs)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Predict labels for every spectrum in INPUT... with a trained model (default: the shipped "
                    "MILES model).\nReads FITS images with a wavelength WCS, FITS/ECSV/CSV tables (wave/loglam, "
                    "flux, ivar or error columns), text files (.txt/.dat/.asc: wavelength, flux[, error]; header "
                    "optional) and remap HDF5 stores.",
        epilog="exit codes: 0 every spectrum predicted; 2 usage, input, model or output-path error (nothing "
               "written: e.g. OUTPUT exists, is an input, or would be read back as one); 3 output written but some "
               "rows failed (see their 'error' column); 4 the output cannot be written (another run is writing it, "
               "permission denied, disk full: finished work is kept, rerun to resume); 130 interrupted by Ctrl-C or "
               "SIGTERM (rerun the same command to resume).\n"
               "flags column: out_of_domain (unlike the training stars, or S/N < 3), outside_fgk_box (a classifier "
               "of MILES stars puts it outside 4000-7000 K; out_of_domain too), teff_outside_range (Teff "
               "PMF mostly outside the fine-tuning range), low_snr (S/N < 20), "
               "partial_coverage, resolution_assumed (finely sampled, no --resolution), rv_unknown (no RV "
               "estimate), at_range_edge:<label>.\n"
               "many GPUs/nodes: torchrun --nproc_per_node N -m remap_lib.cli predict ... (each rank a shard)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories or glob patterns")
    p.add_argument("-o", "--output", required=True, help="output table: .ecsv, .fits, .csv or .h5")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT if it exists (a rerun of the same command may always replace its own)")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--pmf", action="store_true", help="also write each label's full probability mass function")
    p.add_argument("--batch-size", type=_at_least(1), default=256, help="spectra per network call (default 256)")
    p.add_argument("--chunk-size", type=_at_least(1), default=4096,
                   help="spectra read and preprocessed together; memory grows with it (default 4096)")
    p.add_argument("--workers", type=_at_least(0), default=1,
                   help="threads reading and preprocessing the next chunks while the network runs (default 1)")
    p.add_argument("--threads", type=_at_least(1), default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK if available)")
    p.add_argument("--members", type=_at_least(1), default=None,
                   help="use only the first N ensemble members (faster)")
    p.add_argument("--medium", choices=["air", "vacuum"], default=None,
                   help="wavelength medium of the inputs (default: as each file declares, else the model's)")
    lsf = p.add_mutually_exclusive_group()
    lsf.add_argument("--resolution", type=float, default=None,
                     help="resolving power R of the inputs (at least the model's: it cannot sharpen)")
    lsf.add_argument("--fwhm", type=float, default=None,
                     help="LSF FWHM of the inputs in Å (> 0 and at most the model's)")
    p.add_argument("--rv", type=float, default=None, metavar="KM_S",
                   help=f"radial velocity of every input in km/s (|rv| <= {MAX_RV_KMS:g}): wavelengths are divided by "
                        "1 + rv/c to reach the rest frame (default: estimated per spectrum by cross-correlation, "
                        "reported in the rv column and applied beyond 20 km/s; --rv 0 takes the inputs at rest)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_predict)

    def pipeline_parser(name, help_text, members_help=None):
        q = sub.add_parser(name, help=help_text, description=help_text)
        q.add_argument("--profile", default="default", help="names the work folder work/<profile> (default: default)")
        q.add_argument("--work", default=None, help="work folder (default: $REMAP_WORK or work/<profile>)")
        q.add_argument("--miles", default=None, help="MILES dataset file (default: WORK/miles.h5)")
        q.add_argument("--splits", default=None, help="splits CSV (default: data/splits/miles_splits.csv)")
        if members_help:
            q.add_argument("--members", nargs="+", default=None, help=members_help)
        return q

    p = pipeline_parser("finetune", "fine-tune a pretrained model on the MILES fine-tuning dwarfs (resumable)")
    p.add_argument("--pretrained", default=None,
                   help="pretrained model file (default: WORK/pretrained.pt, else the profile's shipped network)")
    p.add_argument("--out", default=None, help="folder for member_k.pt (default: WORK/finetune)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--members", type=int, default=None, help="ensemble size (default: the profile's)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--rehearsal", type=float, default=None,
                   help="synthetic spectra mixed into each epoch per fine-tuning star (default: the profile's)")
    p.add_argument("--noise-snr-min", type=float, default=None,
                   help="lowest S/N of the noise added in augmentation (default: the profile's)")
    p.add_argument("--distill", type=float, default=None,
                   help="unlabelled giant-candidate spectra distilled into each epoch per fine-tuning star, taught "
                        "the pretrained network's own PMFs (default: the profile's)")
    p.add_argument("--distill-labels", nargs="+", choices=("teff", "logg", "feh"), default=None,
                   help="the labels distillation teaches (default: the profile's, teff and logg)")
    p.add_argument("--swa-bn-rows", choices=SWA_BN_ROWS, default=None,
                   help="what the weight average's batch-norm statistics are recomputed on: the fine-tuning stars "
                        "(training) or an epoch's mix of them with the rehearsed and distilled spectra (epoch); "
                        "default: the profile's")
    p.add_argument("--synthetic", default=None, help="synthetic training file to rehearse (default: WORK/synthetic.h5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_finetune)

    p = pipeline_parser("calibrate", "fit per-head temperatures on the validation stars",
                        "member files (default: WORK/finetune/member_k.pt)")
    p.add_argument("--method", choices=CALIBRATION_METHODS, default=resolve("calibrate", "default")["calibration"],
                   help="nll: per-member temperatures by cross-entropy; coverage: one temperature per head, shared "
                        "by the members, matching the ensemble's interval coverage (default: %(default)s)")
    p.set_defaults(func=_calibrate)

    p = pipeline_parser("validate", "bias, scatter and coverage on calibration, validation and giant stars",
                        "calibrated member files (default: WORK/finetune/member_k_calibrated.pt)")
    p.add_argument("--json", default=None, help="also write the report as JSON")
    p.set_defaults(func=_validate)

    p = pipeline_parser("export", "bundle calibrated members into one model file for `remap predict --model`",
                        "calibrated member files (default: WORK/finetune/member_k_calibrated.pt)")
    p.add_argument("-o", "--output", required=True, help="model file to write")
    p.add_argument("--synthetic", default=None, help="synthetic training file for the out-of-domain reference "
                   "(default: WORK/synthetic.h5 when present)")
    p.set_defaults(func=_export)

    p = sub.add_parser("pretrained", help="which pretrained networks fine-tuning starts from (work folder or shipped)")
    p.add_argument("--profile", default="default", help="names the work folder work/<profile> (default: default)")
    p.add_argument("--work", default=None, help="work folder (default: $REMAP_WORK or work/<profile>)")
    p.add_argument("--ship", action="store_true",
                   help="maintainers: copy the work folder's networks into data/pretrained/<profile> and hash them")
    p.set_defaults(func=_pretrained)

    study = sub.add_parser("study", help="cross-validated, seed-replicated evaluation of every method (resumable)")
    actions = study.add_subparsers(dest="action", required=True)
    for action, text in (("run", "run the matrix row x seed x fold: one record per run, finished runs skipped, "
                                  "several processes may share it"),
                         ("status", "runs done, running and left, and the measured compute time of the matrix"),
                         ("aggregate", "metrics over seeds with bootstrap intervals and paired differences"),
                         ("table", "the aggregate as Markdown: the headline, every row's tables and the effects"),
                         ("goals", "issue 12's goals against remap's recipe's measured values, from the aggregate")):
        p = actions.add_parser(action, help=text, description=text)
        p.add_argument("--out", default=None, help="records folder (default: "
                       "results/study; the aggregate goes beside it as study.json)")
        p.add_argument("--profile", default="default", help="training files and budgets (default: default)")
        if action not in ("aggregate", "table", "goals"):
            p.add_argument("--rows", nargs="+", default=None,
                           help="row names or slugs, e.g. deep-REMAP no_swa "
                                "(default: all; see remap_lib.evaluation.study)")
            p.add_argument("--seeds", default="0-4", help="seeds as 0-4 or 0,2,5 (default 0-4)")
            p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
        p.set_defaults(func=_study)
    run_p = actions.choices["run"]
    run_p.add_argument("--fold-seed", type=int, default=0, help="seed of a new fold table (default 0)")
    run_p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (recorded in every run)")
    run_p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (default 1: on a "
                       "shared CPU a second thread slows training down many times)")
    run_p.add_argument("--max-minutes", type=float, default=None, help="start no new run after this many minutes")
    run_p.add_argument("--quiet", action="store_true", help="no progress bars")
    agg_p = actions.choices["aggregate"]
    agg_p.add_argument("--output", default=None, help="aggregate file (default: beside --out, study.json)")
    agg_p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples over stars (default 1000)")
    for action in ("table", "goals"):
        actions.choices[action].add_argument("--input", default=None,
                                             help="aggregate to show (default: beside --out, study.json)")
    actions.choices["goals"].add_argument("--row", default=None, help="the row measured (default: remap's recipe)")

    book = sub.add_parser("book", help="run the book's notebooks").add_subparsers(dest="action", required=True)
    p = book.add_parser("run", help="execute notebooks with a profile through papermill")
    p.add_argument("notebooks", nargs="*", help="names like 01_data_prep (default: all, in order)")
    p.add_argument("--profile", default="default", choices=["smoke", "default", "paper"])
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override a parameter (value parsed as YAML), repeatable")
    p.add_argument("--out", default=None, help="folder for executed notebooks (default: book/notebooks)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_book_run)
    p = book.add_parser("pages", help="generate the book's pages from notebooks, results and benchmarks",
                        add_help=False)
    p.add_argument("page_args", nargs=argparse.REMAINDER, help="arguments of remap_lib.book.bookpages")
    p.set_defaults(func=_book_pages)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # hand every remaining argument (--help included) to the trainer
        argv = ["train", "--", *(argv[2:] if argv[1:2] == ["--"] else argv[1:])]  # `remap train -- ...` too
    if argv[:2] == ["book", "pages"]:
        argv = ["book", "pages", "--", *(argv[3:] if argv[2:3] == ["--"] else argv[2:])]
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RemapDataError, FileNotFoundError, ValueError) as err:
        print(f"remap: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        extra = EXTRA_OF_MODULE.get((err.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"remap: error: `remap {args.command}` needs {err.name}, which a predict-only install leaves out: "
              f"pip install \"remap[{extra}]\" (from a clone: `make install`)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("remap: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
