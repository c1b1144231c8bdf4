"""Run the book's notebooks with a parameter profile (papermill), as ``make book`` does.

    remap book run                         # every notebook, default profile, into book/notebooks
    remap book run 01_data_prep -p max_grid_spectra 200 --profile smoke

Every run records, per notebook, its wall time, profile, overrides, start time and machine in
``run_log.json`` beside the executed notebooks (see :func:`read_run_log`); the book's course guide
and reproducibility page read these logs.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from pathlib import Path

from remap_lib.book.machine import machine_info
from remap_lib.fileio import write_json
from remap_lib.paths import REPO_ROOT, repo_file

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
BOOK_NOTEBOOK_DIR = REPO_ROOT / "book" / "notebooks"
RUN_LOG_NAME = "run_log.json"


def list_notebooks() -> list[str]:
    """Names (without .ipynb) of the pipeline notebooks, in reading order."""
    return sorted(p.stem for p in repo_file(NOTEBOOK_DIR, "the notebooks folder").glob("[0-9][0-9]_*.ipynb"))


def notebook_cells(notebook, cell_type: str = "code") -> list[tuple[str, list[str]]]:
    """``(source, tags)`` of each cell of ``cell_type`` in a notebook file (plain JSON: no nbformat needed)."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    return [("".join(c["source"]) if isinstance(c["source"], list) else c["source"],
             list(c.get("metadata", {}).get("tags", []))) for c in cells if c["cell_type"] == cell_type]


def parameters_cell(notebook) -> str:
    """Source of the cell tagged ``parameters`` (papermill's convention)."""
    for source, tags in notebook_cells(notebook):
        if "parameters" in tags:
            return source
    raise ValueError(f"{notebook}: no cell tagged 'parameters'")


_RESOLVE = re.compile(r"\bresolve\(\s*[\"'](\w+)[\"']")


def notebook_step(notebook) -> str | None:
    """The pipeline step whose profiles a notebook uses (the step its ``profiles.resolve("step", ...)`` names)."""
    steps = {m.group(1) for source, _ in notebook_cells(notebook) for m in _RESOLVE.finditer(source)}
    if len(steps) > 1:
        raise ValueError(f"{notebook}: resolves the profiles of several steps: {sorted(steps)}")
    return steps.pop() if steps else None


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
    (out_dir / f".{name}.failed.ipynb").unlink(missing_ok=True)  # an earlier failure is now fixed
    return target


def run_all(profile: str = "default", out_dir=BOOK_NOTEBOOK_DIR, names=None, overrides=None,
            progress: bool = True) -> list[Path]:
    """Run notebooks in order (later ones read what earlier ones write), timing each in the run log."""
    paths = []
    for name in names or list_notebooks():
        started, machine = datetime.datetime.now(datetime.UTC), machine_info()  # load average at start
        t0 = time.perf_counter()
        paths.append(run_notebook(name, profile, overrides, out_dir, progress))
        record_run(out_dir, name, {"profile": profile, "overrides": dict(overrides or {}),
                                   "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                   "wall_s": round(time.perf_counter() - t0, 2), "machine": machine})
    return paths


def run_log_path(out_dir=BOOK_NOTEBOOK_DIR) -> Path:
    return Path(out_dir) / RUN_LOG_NAME


def read_run_log(path) -> dict:
    """A run log: ``{"notebooks": {name: {"profile", "overrides", "started", "wall_s", "machine"}}, ...}``.

    A missing file reads as an empty log; committed logs (``results/run_times/``) may add a ``source``.
    """
    path = Path(path)
    if not path.exists():
        return {"notebooks": {}}
    log = json.loads(path.read_text())
    log.setdefault("notebooks", {})
    return log


def record_run(out_dir, name: str, entry: dict) -> Path:
    """Set ``name``'s entry in ``out_dir``'s run log, keeping the others.

    Called after each notebook succeeds, so the log always describes the executed copies that are
    there, even after a run of a single notebook or an interrupted run.
    """
    path = run_log_path(out_dir)
    log = read_run_log(path)
    log["notebooks"][name] = entry
    log["notebooks"] = dict(sorted(log["notebooks"].items()))
    write_json(path, log)
    return path
