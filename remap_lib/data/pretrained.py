"""The pretrained networks a fine-tuning starts from: this profile's own, else the ones the repository ships.

Pretraining (notebook 02, ``remap train``) is the expensive step: 17 minutes of a 2-core CPU at the
``default`` profile. So that a class can start at fine-tuning (notebook 03), the repository ships
the ``default`` profile's two pretrained networks, deep-REMAP and its MSE-regression twin, in
``data/pretrained/<profile>/`` (hashed in ``data/MANIFEST.sha256`` like the rest of ``data/``).

:func:`find_pretrained` prefers the network that notebook 02 wrote for the profile in the work
folder (it reflects the reader's own pretraining settings) and falls back to the shipped one, and
says which it took. :func:`compare_networks` tells whether two networks are the same weights:
with the same profile and seed, a fresh pretraining on the machine that made the shipped files
reproduces them bit for bit; another CPU reproduces them only within floating-point rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from remap_lib.fileio import RemapDataError, atomic_write
from remap_lib.nn.modelfile import load_model
from remap_lib.paths import DATA_DIR, work_dir

SHIPPED_DIR = DATA_DIR / "pretrained"
#: File names of the two pretrained networks, in the work folder and in ``data/pretrained/<profile>``.
NETWORK_FILES = {"deep-remap": "pretrained.pt", "mse": "pretrained_mse.pt"}


@dataclass(frozen=True)
class PretrainedNetwork:
    path: Path
    source: str  # "work": written by notebook 02 / `remap train` for this profile; "shipped": data/pretrained

    def describe(self) -> str:
        if self.source == "work":
            return f"{self.path} (pretrained here by notebook 02 for this profile)"
        return f"{self.path} (shipped with the repository; notebook 02 was not run for this profile)"


def shipped_path(profile: str = "default", kind: str = "deep-remap") -> Path:
    """Where the repository keeps ``profile``'s pretrained ``kind`` network (it may not ship one)."""
    try:
        name = NETWORK_FILES[kind]
    except KeyError:
        raise ValueError(f"unknown network kind {kind!r}; choose from {sorted(NETWORK_FILES)}") from None
    return SHIPPED_DIR / profile / name


def find_pretrained(profile: str = "default", kind: str = "deep-remap", work=None,
                    required: bool = True) -> PretrainedNetwork | None:
    """The network fine-tuning should start from: the work folder's, else the shipped one.

    Returns None when neither exists and ``required`` is False (the MSE twin is optional);
    otherwise raises naming both places and how to make one.
    """
    own = Path(work or work_dir(profile)) / NETWORK_FILES.get(kind, "")
    shipped = shipped_path(profile, kind)
    if own.is_file():
        return PretrainedNetwork(own, "work")
    if shipped.is_file():
        return PretrainedNetwork(shipped, "shipped")
    if not required:
        return None
    raise RemapDataError(own, f"no pretrained {kind} network for profile {profile!r}, and none shipped in "
                              f"{shipped.parent}: run notebook 02 (`remap book run 02_pretrain --profile {profile}`)")


def compare_networks(a, b) -> dict:
    """Whether two model files hold the same weights: ``identical``, ``max_abs_diff`` and ``n_tensors``."""
    first, second = (load_model(p)[0].state_dict() for p in (a, b))
    if first.keys() != second.keys() or any(first[k].shape != second[k].shape for k in first):
        return {"identical": False, "max_abs_diff": float("inf"), "n_tensors": len(first),
                "note": "different architectures"}
    diffs = [float((first[k].double() - second[k].double()).abs().max()) if first[k].numel() else 0.0
             for k in first]
    return {"identical": all(torch.equal(first[k], second[k]) for k in first), "max_abs_diff": max(diffs, default=0.0),
            "n_tensors": len(first)}


def against_shipped(profile: str = "default", work=None) -> dict[str, str]:
    """Per network kind in the work folder, whether it holds the shipped network's weights, in words."""
    source = Path(work or work_dir(profile))
    verdicts = {}
    for kind, name in NETWORK_FILES.items():
        shipped = shipped_path(profile, kind)
        if not (source / name).is_file():
            continue
        if not shipped.is_file():
            verdicts[kind] = f"the repository ships no pretrained {kind} network for the {profile!r} profile"
            continue
        same = compare_networks(source / name, shipped)
        verdicts[kind] = ("identical weights" if same["identical"]
                          else f"different weights (largest difference {same['max_abs_diff']:.2g})")
    return verdicts


def ship(profile: str = "default", work=None) -> list[Path]:
    """Copy the work folder's pretrained networks into ``data/pretrained/<profile>`` and hash them.

    Maintainers run this (``remap pretrained --ship``) after notebook 02 when the pretraining
    changes, and commit the files with ``data/MANIFEST.sha256``.
    """
    from remap_lib.data.sources.sme_grid import MANIFEST, write_manifest

    source = Path(work or work_dir(profile))
    copied = []
    for kind, name in NETWORK_FILES.items():
        if not (source / name).is_file():
            raise RemapDataError(source / name, f"no pretrained {kind} network to ship: run notebook 02 first")
        target = shipped_path(profile, kind)
        with atomic_write(target) as fh:
            fh.write((source / name).read_bytes())
        copied.append(target)
    write_manifest(copied, MANIFEST)
    return copied
