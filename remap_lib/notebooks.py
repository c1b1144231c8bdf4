"""Run the book's notebooks with a parameter profile (papermill), as ``make book`` does.

    remap book run                         # every notebook, default profile, into book/notebooks
    remap book run 01_data_prep -p max_grid_spectra 200 --profile smoke
"""

from __future__ import annotations

import os
from pathlib import Path

from .paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
BOOK_NOTEBOOK_DIR = REPO_ROOT / "book" / "notebooks"


def list_notebooks() -> list[str]:
    """Names (without .ipynb) of the pipeline notebooks, in reading order."""
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(name: str, profile: str = "default", overrides: dict | None = None,
                 out_dir=BOOK_NOTEBOOK_DIR, progress: bool = True) -> Path:
    """Execute ``notebooks/<name>.ipynb`` with ``profile`` and overrides; return the output path.

    The executed copy is written beside its final name and renamed only on success, so a failed
    run never leaves a half-executed notebook where the book would render it.
    """
    import papermill

    source = NOTEBOOK_DIR / f"{name}.ipynb"
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such notebook; available: {', '.join(list_notebooks())}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.ipynb"
    partial = out_dir / f".{name}.running.ipynb"
    parameters = {"profile": profile, **(overrides or {})}
    try:
        papermill.execute_notebook(str(source), str(partial), parameters=parameters, cwd=str(NOTEBOOK_DIR),
                                   kernel_name="python3", progress_bar=progress, log_output=False)
    except BaseException:
        # keep the failed copy for inspection, under a name the book does not pick up
        if partial.exists():
            os.replace(partial, out_dir / f".{name}.failed.ipynb")
        raise
    os.replace(partial, target)
    return target


def run_all(profile: str = "default", out_dir=BOOK_NOTEBOOK_DIR, names=None, overrides=None,
            progress: bool = True) -> list[Path]:
    """Run notebooks in order (later ones read what earlier ones write)."""
    return [run_notebook(n, profile, overrides, out_dir, progress) for n in (names or list_notebooks())]
