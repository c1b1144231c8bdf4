"""The deep-REMAP network: a 1-D residual CNN with one classification head per label.

The paper names two module types: "RN-Module V1" (identity residual block) and "V2" (projection
block that downsamples). The backbone stacks them, growing the number of channels while halving
the spectrum's length at each stage; global average pooling gives a feature vector from which

- three heads output logits over the bins of Teff, log g and [Fe/H] (regression as classification), and
- an embedding branch outputs an L2-normalized vector for the triplet loss and nearest-neighbour retrieval.

Layer sizes are not published: the defaults here are our choice (see the book's method chapter).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters (saved in every model file)."""

    npix: int = 780
    stem_channels: int = 32
    stage_channels: tuple[int, ...] = (32, 64, 128, 256)
    blocks_per_stage: int = 2  # one projection block + (blocks_per_stage - 1) identity blocks
    kernel_size: int = 7
    embedding_dim: int = 64
    head_bins: dict[str, int] = field(default_factory=lambda: {"teff": 68, "logg": 49, "feh": 68})
    dropout: float = 0.1
    head: str = "classification"  # or "regression": one standardized value per label (the MSE baseline)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stage_channels"] = list(self.stage_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["stage_channels"] = tuple(d["stage_channels"])
        return cls(**d)


class IdentityBlock(nn.Module):
    """RN-Module V1: x + F(x), F = conv-BN-ReLU-conv-BN, same length and channels."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(channels)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class ProjectionBlock(nn.Module):
    """RN-Module V2: halves the length and changes the channels; the shortcut is a strided 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel_size, stride=2, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel_size, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm1d(c_out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.shortcut(x) + self.bn2(self.conv2(y)))


class DeepREMAP(nn.Module):
    """Spectrum (B, npix) of continuum-normalized flux -> {"logits": {label: (B, nbins)}, "embedding": (B, d)}."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        k = config.kernel_size
        self.stem = nn.Sequential(
            nn.Conv1d(1, config.stem_channels, k, padding=k // 2, bias=False),
            nn.BatchNorm1d(config.stem_channels),
            nn.ReLU(),
        )
        blocks, c_prev = [], config.stem_channels
        for c in config.stage_channels:
            blocks.append(ProjectionBlock(c_prev, c, k))
            blocks += [IdentityBlock(c, k) for _ in range(config.blocks_per_stage - 1)]
            c_prev = c
        self.backbone = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(config.dropout)
        self.embed = nn.Linear(c_prev, config.embedding_dim)
        if config.head == "classification":
            self.heads = nn.ModuleDict({name: nn.Linear(c_prev, n) for name, n in config.head_bins.items()})
        elif config.head == "regression":
            self.heads = nn.ModuleDict({name: nn.Linear(c_prev, 1) for name in config.head_bins})
        else:
            raise ValueError(f"head must be 'classification' or 'regression', got {config.head!r}")

    def features(self, flux: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled backbone features (B, C). Masked pixels are set to the continuum (1.0)."""
        x = flux - 1.0  # continuum at zero: padding and masked pixels then carry no signal
        if mask is not None:
            x = x.masked_fill(mask, 0.0)
        x = self.backbone(self.stem(x.unsqueeze(1)))
        return x.mean(dim=-1)

    def forward(self, flux: torch.Tensor, mask: torch.Tensor | None = None, return_features: bool = False) -> dict:
        """``return_features``: also return the pooled features the heads read, as ``"features"`` (B, C)."""
        features = self.features(flux, mask)
        embedding = F.normalize(self.embed(features), dim=-1)
        h = self.dropout(features)
        out = {name: head(h) for name, head in self.heads.items()}
        if self.config.head == "regression":
            out = {name: v.squeeze(-1) for name, v in out.items()}
        return {"logits": out, "embedding": embedding, **({"features": features} if return_features else {})}

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def summary(self) -> str:
        c = self.config
        return (f"DeepREMAP: {self.n_params():,} parameters; input {c.npix} px; stem {c.stem_channels} ch; "
                f"stages {list(c.stage_channels)} x {c.blocks_per_stage} blocks "
                f"(length / {2 ** len(c.stage_channels)}); "
                f"embedding {c.embedding_dim}; heads {c.head_bins} ({c.head})")


def fuse_for_inference(model: DeepREMAP) -> DeepREMAP:
    """A copy of ``model`` with every BatchNorm folded into the convolution before it.

    In eval mode BatchNorm is a fixed per-channel affine map, so it can be absorbed into the
    preceding convolution's weights and bias: the outputs are unchanged (to float rounding) and
    inference skips one pass over every activation. The copy is for inference only (eval mode).
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, IdentityBlock | ProjectionBlock):
            module.conv1, module.bn1 = fuse_conv_bn_eval(module.conv1, module.bn1), nn.Identity()
            module.conv2, module.bn2 = fuse_conv_bn_eval(module.conv2, module.bn2), nn.Identity()
            if isinstance(module, ProjectionBlock):
                module.shortcut = fuse_conv_bn_eval(module.shortcut[0], module.shortcut[1])
    fused.stem = nn.Sequential(fuse_conv_bn_eval(fused.stem[0], fused.stem[1]), fused.stem[2])
    return fused


class InferenceNet(nn.Module):
    """Inference twin of a (BatchNorm-folded) DeepREMAP with every 1-D convolution run as a 1×k 2-D one.

    A spectrum becomes a (B, 1, 1, L) image in channels-last memory layout, for which oneDNN has
    faster CPU kernels than for 1-D convolutions (1.5–1.8× on AVX2 for our layer shapes); the
    arithmetic is the same, so outputs agree to float rounding. Same inputs and outputs as DeepREMAP.
    """

    def __init__(self, model: DeepREMAP):
        super().__init__()
        import copy

        net = copy.deepcopy(model).eval()
        _conv1d_to_2d(net)
        self.config = net.config
        self.stem, self.backbone, self.embed, self.heads = net.stem, net.backbone, net.embed, net.heads
        self.to(memory_format=torch.channels_last)

    def forward(self, flux: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        x = flux - 1.0
        if mask is not None:
            x = x.masked_fill(mask, 0.0)
        x = x[:, None, None, :].contiguous(memory_format=torch.channels_last)
        h = self.backbone(self.stem(x)).mean(dim=(2, 3))
        embedding = F.normalize(self.embed(h), dim=-1)
        out = {name: head(h) for name, head in self.heads.items()}
        if self.config.head == "regression":
            out = {name: v.squeeze(-1) for name, v in out.items()}
        return {"logits": out, "embedding": embedding}


def _conv1d_to_2d(module: nn.Module) -> None:
    """Replace, in place, every Conv1d below ``module`` by the equivalent 1×k Conv2d."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv1d):
            conv = nn.Conv2d(child.in_channels, child.out_channels, (1, child.kernel_size[0]),
                             stride=(1, child.stride[0]), padding=(0, child.padding[0]),
                             bias=child.bias is not None, groups=child.groups)
            with torch.no_grad():
                conv.weight.copy_(child.weight.unsqueeze(2))
                if child.bias is not None:
                    conv.bias.copy_(child.bias)
            setattr(module, name, conv)
        else:
            _conv1d_to_2d(child)
