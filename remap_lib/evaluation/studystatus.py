"""How far the study is: runs done, running and left per row, and the compute time still needed.

``remap study status`` prints :func:`status`; the time per run is the median CPU time of the
complete runs of each kind (:func:`measured_seconds`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from remap_lib.evaluation import runqueue
from remap_lib.evaluation.studyrows import DERIVED_FROM, ROW_BY_NAME


def measured_seconds(out) -> dict[str, dict]:
    """Per task kind: the median CPU time of its complete runs (one thread: the wall time on an idle core).
    A row that trains another network than its kind's (:attr:`~remap_lib.evaluation.studyrows.Row.network`) is
    timed on its own.

    CPU time, not wall time, because the study runs niced beside other work, and a stopped or
    starved process would otherwise count as slow; resumed runs (partial work) are left out.
    Records without a CPU time fall back to their wall time.
    """
    times: dict[str, list] = {}
    for path in Path(out).glob("*/**/*.json"):
        rec = runqueue.read_record(out, str(path.relative_to(out).with_suffix("")))
        if "wall_s" in rec and not rec.get("resumed", False):
            row = ROW_BY_NAME.get(rec.get("row"))
            times.setdefault(_kind_label(rec["kind"], rec.get("budget"), row.network if row else None), []).append(
                (rec.get("cpu_s", rec["wall_s"]), rec["wall_s"]))
    return {k: {"runs": len(v), "cpu_s": float(np.median([c for c, _ in v])),
                "wall_s": float(np.median([w for _, w in v]))} for k, v in sorted(times.items())}


def _kind_label(kind: str, budget: str | None, network: str | None = None) -> str:
    label = f"{kind} ({budget} budget)" if kind in ("pretrain", "ensemble", "reduced", "scratch", "mse") else kind
    return f"{label}, {network} network" if network else label


def status(out, claims, tasks) -> dict:
    """Done / running / left per row of the planned ``tasks`` (:func:`remap_lib.evaluation.study.plan`), and the
    compute time of the matrix from the measured runs."""
    times = measured_seconds(out)
    running = runqueue.live_claims(claims)
    rows: dict[str, dict] = {}
    need = {"total": 0.0, "left": 0.0}
    unmeasured = set()
    for t in tasks:
        label = _kind_label(t.kind, t.row.budget, t.row.network)
        entry = rows.setdefault(t.row.name, {"done": 0, "running": 0, "left": 0})
        done = runqueue.is_done(out, t.key)
        entry["done" if done else "running" if t.key in running else "left"] += 1
        if label in times:
            need["total"] += times[label]["cpu_s"]
            need["left"] += 0.0 if done else times[label]["cpu_s"]
        else:
            unmeasured.add(label)
    return {"rows": rows, "measured": times, "hours": {k: v / 3600 for k, v in need.items()},
            "unmeasured": sorted(unmeasured), "running": running}


def print_status(report: dict) -> None:
    print(f"{'row':32s} {'done':>5s} {'running':>8s} {'left':>5s}")
    for name, r in report["rows"].items():
        print(f"{name:32s} {r['done']:5d} {r['running']:8d} {r['left']:5d}")
    for source, names in DERIVED_FROM.items():
        if names:
            print(f"({', '.join(names)}: from {source}'s runs)")
    print("\nmeasured time per run (median CPU seconds of complete runs, one thread; wall time as run, niced):")
    for kind, m in report["measured"].items():
        print(f"  {kind:32s} {m['cpu_s']:8.0f} s CPU  {m['wall_s']:8.0f} s wall  over {m['runs']} run(s)")
    h = report["hours"]
    print(f"\ncompute of the planned matrix (CPU hours, one core): {h['total']:.1f} h in all, {h['left']:.1f} h left"
          + (f" (not counting unmeasured kinds: {', '.join(report['unmeasured'])})" if report["unmeasured"] else ""))
    for key, owner in report["running"].items():
        print(f"running: {key} (pid {owner['pid']} on {owner['host']} since {owner['started']})")
