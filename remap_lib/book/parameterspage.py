"""The notebooks' parameters and exercises, read from the notebooks themselves for the book's pages.

- :func:`parameters_page` (``parameters.md``): every notebook's parameters, with their values per
  profile (:data:`remap_lib.training.profiles.PROFILES`) and their meaning, the inline comment on each
  line of the ``parameters`` cell;
- :func:`exercises_fragment` (``exercises.md``): each notebook's numbered "Try this" items.

:func:`parameter_problems` names what a new notebook's cell lacks (a meaning, a profile entry).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

import yaml

from remap_lib.book.markdown import code_cell, table_cell
from remap_lib.book.notebooks import NOTEBOOK_DIR, list_notebooks, notebook_cells, notebook_step, parameters_cell
from remap_lib.paths import REPO_ROOT
from remap_lib.training.profiles import PROFILE_NAMES

TOC = REPO_ROOT / "_toc.yml"


# ------------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Parameter:
    name: str
    value: object  # the literal in the cell; None means "from the profile" where PROFILES has the name
    meaning: str  # the inline comment on the assignment, "" when there is none


def parse_parameters(source: str, where: str = "parameters cell") -> list[Parameter]:
    """``name = literal  # meaning`` lines, in order; anything else in the cell is an error.

    Why not papermill's ``inspect_notebook``: it accepts ``epochs = 3 * 4`` or ``x = f()`` and skips
    stray statements silently, and returns values as source text; this rejects both and returns values.
    """
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    params = []
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{where}, line {node.lineno}: expected `name = value  # meaning`")
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(f"{where}, line {node.lineno}: {node.targets[0].id} is not a literal") from None
        # a value spread over several lines may carry its comment on any of them
        meaning = " ".join(comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments)
        params.append(Parameter(node.targets[0].id, value, meaning))
    return params


def read_parameters(name: str, notebook_dir=NOTEBOOK_DIR) -> list[Parameter]:
    path = Path(notebook_dir) / f"{name}.ipynb"
    return parse_parameters(parameters_cell(path), where=f"{path.name} parameters cell")


def _step_profiles(name: str, notebook_dir, profiles) -> tuple[str | None, dict]:
    """The step notebook ``name`` resolves and that step's ``{profile: parameters}`` in ``profiles``
    (default: :data:`remap_lib.training.profiles.PROFILES`)."""
    step = notebook_step(Path(notebook_dir) / f"{name}.ipynb")
    if profiles is None:
        from remap_lib.training import profiles as module

        profiles = module.PROFILES
    return step, profiles.get(step, {})


def profile_values(name: str, params: list[Parameter], profiles=None,
                   notebook_dir=NOTEBOOK_DIR) -> dict[str, dict[str, object]]:
    """The value each parameter takes under each profile when the notebook runs unchanged."""
    _, table = _step_profiles(name, notebook_dir, profiles)
    values = {}
    for prof in PROFILE_NAMES:
        row = {}
        for p in params:
            if p.name == "profile":
                row[p.name] = prof
            elif p.value is None and p.name in table.get(prof, {}):
                row[p.name] = table[prof][p.name]
            else:
                row[p.name] = p.value
        values[prof] = row
    return values


def parameter_problems(name: str, params: list[Parameter], profiles=None, notebook_dir=NOTEBOOK_DIR) -> list[str]:
    """What keeps the parameters page from being complete and true: missing meanings, and profile
    entries for parameters the cell does not have (the notebook would never see them)."""
    problems = [f"{name}: parameter {p.name!r} has no meaning (add `  # ...` to its line)"
                for p in params if not p.meaning]
    names = {p.name for p in params}
    step, step_table = _step_profiles(name, notebook_dir, profiles)
    for prof, table in step_table.items():
        problems += [f"{name}: PROFILES[{step!r}][{prof!r}] names {key!r}, which the parameters cell lacks"
                     for key in table if key not in names]
    if "profile" not in names:
        problems.append(f"{name}: the parameters cell has no 'profile'")
    return problems


def _toc_files(toc=TOC) -> set[str]:
    """Every ``file:`` of the table of contents (to link only to pages the book has)."""
    files: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                files.add(node["file"].removesuffix(".md").removesuffix(".ipynb"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    if Path(toc).exists():
        data = yaml.safe_load(Path(toc).read_text()) or {}
        walk(data)
        if isinstance(data.get("root"), str):
            files.add(data["root"])
    return files


def _notebook_ref(name: str, prefix: str, toc_files: set[str]) -> str:
    """A link to the notebook's page when the book has one, else its name."""
    if f"book/notebooks/{name}" in toc_files:
        return f"{{doc}}`{name} <{prefix}notebooks/{name}>`"
    return f"`{name}`"


def parameters_page(names=None, notebook_dir=NOTEBOOK_DIR, profiles=None, toc_files=None) -> str:
    names = names or list_notebooks()
    toc_files = _toc_files() if toc_files is None else toc_files
    lines = ["# Parameters of every notebook", "",
             "Generated when the book is built, from the `parameters` cell of each notebook in `notebooks/` "
             "(value and the comment on its line) and from the profiles in `remap_lib/training/profiles.py`. "
             "In a cell, `None` means *take the value from the profile*; the columns show what each "
             "profile gives. Change any of them for one run without editing a notebook:", "",
             "```bash",
             "remap book run 02_pretrain --profile default -p epochs 50 -p gamma 0   # one notebook",
             "remap book run --profile smoke                                        # all, in order",
             "make book PROFILE=paper                                               # the whole book",
             "```", "",
             "Values given with `-p` are read as YAML (`-p stage_channels '[16, 32]'`). Later notebooks read "
             "what earlier ones wrote for the same profile, so rerun the notebooks after the one you changed.", ""]
    for name in names:
        params = read_parameters(name, notebook_dir)
        values = profile_values(name, params, profiles, notebook_dir)
        lines += [f"## {name}", "", f"Notebook {_notebook_ref(name, '../', toc_files)}.", "",
                  "| parameter | " + " | ".join(PROFILE_NAMES) + " | meaning |",
                  "|---|" + "---|" * len(PROFILE_NAMES) + "---|"]
        for p in params:
            cells = [code_cell(values[prof][p.name]) for prof in PROFILE_NAMES]
            meaning = table_cell(p.meaning) if p.meaning else "**no meaning given**"
            lines.append(f"| `{p.name}` | " + " | ".join(cells) + f" | {meaning} |")
        lines.append("")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- exercises
def exercises(name: str, notebook_dir=NOTEBOOK_DIR) -> list[str]:
    """The numbered items of the notebook's "Try this" cells, each as one line of Markdown."""
    items: list[str] = []
    for source, _ in notebook_cells(Path(notebook_dir) / f"{name}.ipynb", "markdown"):
        if not source.lstrip().startswith("## Try this"):
            continue
        current = None
        for line in source.splitlines()[1:]:
            if m := re.match(r"\s*\d+\.\s+(.*)", line):
                current = m.group(1).strip()
                items.append(current)
            elif current is not None and line.strip():
                items[-1] = f"{items[-1]} {line.strip()}"
            elif not line.strip():
                current = None
    return items


def exercises_fragment(names=None, notebook_dir=NOTEBOOK_DIR, toc_files=None) -> str:
    names = names or list_notebooks()
    toc_files = _toc_files() if toc_files is None else toc_files
    lines = []
    for name in names:
        items = exercises(name, notebook_dir)
        lines.append(f"**{_notebook_ref(name, '', toc_files)}** — {len(items) or 'no'} "
                     f"exercise{'s' if len(items) != 1 else ''}")
        lines.append("")
        lines += [f"{i}. {text}" for i, text in enumerate(items, 1)]
        lines.append("")
    return "\n".join(lines)
