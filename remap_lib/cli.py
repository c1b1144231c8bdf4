"""The ``remap`` command: data fetching, grid building and running the book without Jupyter."""

from __future__ import annotations

import argparse
import sys

import yaml

from .fileio import RemapDataError


def _fetch(args) -> int:
    from .cache import GES_LINELIST_ARCHIVE, MARCS_ARCHIVE, MILES_ARCHIVE, extract_archive
    from .paths import DATA_DIR
    from .sources.sme_grid import MANIFEST, verify_manifest

    for archive in (MILES_ARCHIVE, MARCS_ARCHIVE, GES_LINELIST_ARCHIVE):
        path = extract_archive(archive)
        print(f"{archive.requirement:24s} ok  {path}")
    if MANIFEST.exists():
        verify_manifest(MANIFEST)
        print(f"{DATA_DIR.name}/{MANIFEST.name}: every shipped file matches its sha256")
    return 0


def _grid_build(args) -> int:
    from .sources.sme_grid import GRID_FILE, WORK_DIR, build_grid

    result = build_grid(output=args.output or GRID_FILE, workdir=args.workdir or WORK_DIR,
                        workers=args.workers, limit=args.limit, progress=not args.quiet)
    if result is None:
        print("grid incomplete: rerun `remap grid build` to continue where this run stopped")
        return 3
    print(f"grid complete: {result}")
    return 0


def _grid_verify(args) -> int:
    from .sources.sme_grid import MANIFEST, verify_manifest

    verify_manifest(MANIFEST)
    print(f"{MANIFEST}: all files match")
    return 0


def _book_run(args) -> int:
    from .notebooks import BOOK_NOTEBOOK_DIR, run_all

    overrides = {key: yaml.safe_load(value) for key, value in args.param}
    for path in run_all(args.profile, args.out or BOOK_NOTEBOOK_DIR, args.notebooks or None, overrides,
                        progress=not args.quiet):
        print(f"executed {path}")
    return 0


def _prepare(args) -> int:
    from .trainsets import prepare

    paths = prepare(args.profile, instrument=args.instrument, max_grid_spectra=args.max_grid_spectra,
                    max_miles_stars=args.max_miles_stars, seed=args.seed, out_dir=args.out)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _train(args) -> int:
    from .train import main as train_main

    rest = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    return train_main(rest)


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
    p.set_defaults(func=_prepare)

    p = sub.add_parser("train", help="pretrain on a dataset file (see `remap train -- --help`)", add_help=False)
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="arguments of remap_lib.train")
    p.set_defaults(func=_train)

    book = sub.add_parser("book", help="run the book's notebooks").add_subparsers(dest="action", required=True)
    p = book.add_parser("run", help="execute notebooks with a profile through papermill")
    p.add_argument("notebooks", nargs="*", help="names like 01_data_prep (default: all, in order)")
    p.add_argument("--profile", default="default", choices=["smoke", "default", "paper"])
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override a parameter (value parsed as YAML), repeatable")
    p.add_argument("--out", default=None, help="folder for executed notebooks (default: book/notebooks)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_book_run)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # hand every remaining argument (--help included) to the trainer
        argv = ["train", "--", *(argv[2:] if argv[1:2] == ["--"] else argv[1:])]  # `remap train -- ...` too
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RemapDataError, FileNotFoundError, ValueError) as err:
        print(f"remap: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("remap: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
