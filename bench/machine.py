"""What every benchmark records about the machine it ran on (imported by the bench scripts)."""

from __future__ import annotations

import os
import platform
import sys

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def pin_threads_from_argv(default: int = 2) -> int:
    """Set the OpenMP/BLAS pool sizes from ``--threads`` on the command line; returns the number.

    Call it before numpy or torch is imported: the pools are sized when those libraries load.
    """
    threads = default
    for i, arg in enumerate(sys.argv):
        if arg.startswith("--threads="):
            threads = int(arg.split("=", 1)[1])
        elif arg == "--threads" and i + 1 < len(sys.argv):
            threads = int(sys.argv[i + 1])
    for var in THREAD_VARIABLES:
        os.environ[var] = str(threads)
    return threads


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
