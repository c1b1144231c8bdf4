"""What every benchmark records about the machine it ran on (imported by the bench scripts).

``machine_info`` lives in the package (the notebooks' run logs record the same description);
thread pinning is the benchmarks' own.
"""

from __future__ import annotations

import os
import sys

from remap_lib.book.machine import machine_info

__all__ = ["THREAD_VARIABLES", "machine_info", "pin_threads_from_argv"]

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
