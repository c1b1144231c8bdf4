"""torchrun's environment, read in one place (training and streaming prediction both run under it)."""

from __future__ import annotations

import os


def torchrun_env() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them; (0, 1, 0) outside torchrun."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(backend: str) -> tuple[int, int]:
    """(rank, world size), with the default process group started on ``backend`` when world size > 1."""
    rank, world, _ = torchrun_env()
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend)
    return rank, world
