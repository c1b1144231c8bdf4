"""What a run records about the machine it ran on: notebooks' run logs and the benchmarks name it the same way."""

from __future__ import annotations

import os
import platform


def machine_info() -> dict:
    """CPU model, usable cores, platform, Python and the load average when the benchmark starts."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {"cpu_model": cpu, "nproc": usable, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "load_average_start": list(os.getloadavg())}


def describe_machine(machine: dict | None) -> str:
    """'CPU model, N cores' of a :func:`machine_info` record, or that none was recorded."""
    if not machine:
        return "machine not recorded"
    cores = machine.get("nproc", machine.get("cpu_count"))
    parts = [machine.get("cpu_model"), f"{cores} cores" if cores else None]
    return ", ".join(p for p in parts if p) or "machine not recorded"
