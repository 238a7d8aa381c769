"""ReviewKD (Chen et al., CVPR 2021, "Distilling Knowledge via Knowledge Review").

The feature loss that CKD is combined with in the "CKD + ReviewKD" ablation and on detection.
The student's features are "reviewed" from the deepest level to the shallowest: each level is
projected to ``mid_channel`` (1x1 conv + BN), fused with the upsampled result of the deeper
level by an attention-based fusion (ABF: a 1x1 conv on the concatenation gives two sigmoid maps
that weight the two inputs per position), resized to the teacher's resolution and projected to
the teacher's channel count (3x3 conv + BN). The fused features are matched to the teacher's
with the hierarchical context loss ``hcl_loss``.

Conventions (as mdistiller's ReviewKD distiller, which the CKD authors use unchanged):
- the level list is ``feats[1:]`` (the stem output is not used) followed by the pooled feature
  as ``[B, D, 1, 1]``; the student uses the post-ReLU ``feats``, the teacher ``preact_feats``.
- ``mid_channel`` defaults to ``min(512, D_student)``.
Unlike mdistiller's config, every list here (channels and spatial sizes) is ordered from the
shallowest level to the deepest (pooled) one; mdistiller's SHAPES/OUT_SHAPES run deep to
shallow while its channel lists run shallow to deep. ``forward`` checks every input level's
channels and size, so a misordered list fails loudly instead of training a wrong connector.
The trainer optimises ``ReviewKD``'s parameters together with the student's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import autocast_off, upcast

Size2d = tuple[int, int]


def _as_size(value: int | Sequence[int], what: str) -> Size2d:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{what} must be an int or a pair of ints; got {value!r}")


class ABF(nn.Module):
    """Attention-based fusion of one student level with the result of the deeper level.

    Returns ``(output, residual)``: ``output`` has the teacher's channels and size and goes to
    the loss; ``residual`` (``mid_channel`` channels, at the teacher's size) feeds the next,
    shallower level.
    """

    def __init__(self, in_channel: int, mid_channel: int, out_channel: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channel, mid_channel, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid_channel),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channel, out_channel, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channel),
        )
        self.att_conv = (
            nn.Sequential(nn.Conv2d(mid_channel * 2, 2, kernel_size=1), nn.Sigmoid())
            if fuse
            else None
        )
        # Same initialisation as the reference implementation.
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None, out_size: Size2d
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None:
            if residual is None:
                raise ValueError("ABF with fusion needs the deeper level's residual")
            residual = F.interpolate(residual, size=tuple(x.shape[-2:]), mode="nearest")
            weights = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * weights[:, 0:1] + residual * weights[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


def reviewkd_features(feats: Mapping[str, object], preact: bool = False) -> list[torch.Tensor]:
    """Build the ReviewKD level list from a ``forward_features`` dict (docs/CONTRACTS.md).

    Returns ``feats[key][1:] + [pooled_feat[:, :, None, None]]`` with ``key`` "preact_feats"
    when ``preact`` (mdistiller's choice for the teacher) and "feats" otherwise (the student).
    """
    key = "preact_feats" if preact else "feats"
    for needed in (key, "pooled_feat"):
        if needed not in feats:
            raise ValueError(
                f"reviewkd_features: the features dict lacks {needed!r}; has {sorted(feats)}"
            )
    levels = list(feats[key])
    pooled = feats["pooled_feat"]
    if not isinstance(pooled, torch.Tensor) or pooled.dim() != 2:
        shape = tuple(pooled.shape) if isinstance(pooled, torch.Tensor) else type(pooled)
        raise ValueError(f"reviewkd_features: pooled_feat must be [B, D]; got {shape}")
    if len(levels) < 2:
        raise ValueError(
            f"reviewkd_features: {key!r} needs the stem and at least one stage; "
            f"got {len(levels)} entries"
        )
    return levels[1:] + [pooled[:, :, None, None]]


class ReviewKD(nn.Module):
    """The ReviewKD connectors: student level list -> fused features shaped like the teacher's.

    Args (all lists shallow -> deep, the last entry being the pooled 1x1 level):
        in_channels: student channels per level.
        out_channels: teacher channels per level.
        mid_channel: width of the fusion path (mdistiller: ``min(512, in_channels[-1])``).
        shapes: student spatial sizes (int or (h, w)) per level.
        out_shapes: teacher spatial sizes per level.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: Sequence[int],
        mid_channel: int,
        shapes: Sequence[int | Sequence[int]],
        out_shapes: Sequence[int | Sequence[int]],
    ) -> None:
        super().__init__()
        n = len(in_channels)
        if n == 0 or not (len(out_channels) == len(shapes) == len(out_shapes) == n):
            raise ValueError(
                "ReviewKD: in_channels, out_channels, shapes and out_shapes must be non-empty "
                f"and of equal length; got {len(in_channels)}, {len(out_channels)}, "
                f"{len(shapes)}, {len(out_shapes)}"
            )
        self.in_channels = [int(c) for c in in_channels]
        self.out_channels = [int(c) for c in out_channels]
        self.mid_channel = int(mid_channel)
        self.shapes = [_as_size(s, "shapes entry") for s in shapes]
        self.out_shapes = [_as_size(s, "out_shapes entry") for s in out_shapes]
        self.abfs = nn.ModuleList(
            ABF(c_in, self.mid_channel, c_out, fuse=idx < n - 1)
            for idx, (c_in, c_out) in enumerate(
                zip(self.in_channels, self.out_channels, strict=True)
            )
        )

    def forward(self, student_feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Fuse the student's levels (shallow -> deep); returns one tensor per teacher level."""
        self._check_inputs(student_feats)
        out: list[torch.Tensor] = []
        residual = None
        for idx in range(len(self.abfs) - 1, -1, -1):
            fused, residual = self.abfs[idx](student_feats[idx], residual, self.out_shapes[idx])
            out.append(fused)
        return out[::-1]

    def _check_inputs(self, feats: Sequence[torch.Tensor]) -> None:
        if len(feats) != len(self.abfs):
            raise ValueError(
                f"ReviewKD: expected {len(self.abfs)} student levels; got {len(feats)}"
            )
        for idx, f in enumerate(feats):
            expected = (self.in_channels[idx], *self.shapes[idx])
            if f.dim() != 4 or tuple(f.shape[1:]) != expected:
                raise ValueError(
                    f"ReviewKD: student level {idx} should be [B, {expected[0]}, {expected[1]}, "
                    f"{expected[2]}] (lists are shallow -> deep); got {tuple(f.shape)}"
                )

    @classmethod
    def for_models(
        cls,
        student: nn.Module,
        teacher: nn.Module,
        input_size: Sequence[int] = (3, 32, 32),
        mid_channel: int | None = None,
        max_mid_channel: int = 512,
    ) -> ReviewKD:
        """Infer channels and sizes from one dummy forward of each model's ``forward_features``.

        The models are run in eval mode under no_grad on a zero batch of 2 and their
        train/eval flags are restored afterwards. ``mid_channel`` defaults to
        ``min(max_mid_channel, student pooled dim)`` as in mdistiller.
        """
        s_levels = reviewkd_features(_probe(student, input_size), preact=False)
        t_levels = reviewkd_features(_probe(teacher, input_size), preact=True)
        if len(s_levels) != len(t_levels):
            raise ValueError(
                f"ReviewKD.for_models: student has {len(s_levels)} levels, teacher "
                f"{len(t_levels)}; ReviewKD pairs them one to one"
            )
        in_channels = [f.shape[1] for f in s_levels]
        if mid_channel is None:
            mid_channel = min(max_mid_channel, in_channels[-1])
        return cls(
            in_channels=in_channels,
            out_channels=[f.shape[1] for f in t_levels],
            mid_channel=mid_channel,
            shapes=[tuple(f.shape[-2:]) for f in s_levels],
            out_shapes=[tuple(f.shape[-2:]) for f in t_levels],
        )


class FPNReviewKD(nn.Module):
    """ReviewKD connectors between two FPNs (the authors' detection ``build_kd_trans``).

    All levels have ``channels`` channels (FPN's 256) in student and teacher alike, and since
    both see the same batch, each student level has its teacher level's spatial size; the sizes
    change from batch to batch (multi-scale training), so unlike the classification ``ReviewKD``
    nothing here is fixed at construction. Levels run shallow (P2) to deep (P6); fusion goes from
    the deepest level up, each ABF resizing the deeper residual to its own level.
    """

    def __init__(self, num_levels: int = 5, channels: int = 256, mid_channel: int = 256) -> None:
        super().__init__()
        self.abfs = nn.ModuleList(ABF(channels, mid_channel, channels, fuse=i < num_levels - 1)
                                  for i in range(num_levels))

    def forward(self, student_levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(student_levels) != len(self.abfs):
            raise ValueError(f"FPNReviewKD: expected {len(self.abfs)} FPN levels, got "
                             f"{len(student_levels)}")
        out: list[torch.Tensor] = []
        residual = None
        for idx in range(len(self.abfs) - 1, -1, -1):
            level = student_levels[idx]
            fused, residual = self.abfs[idx](level, residual, tuple(level.shape[-2:]))
            out.append(fused)
        return out[::-1]


def _probe(model: nn.Module, input_size: Sequence[int]) -> Mapping[str, object]:
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            _, feats = model.forward_features(
                torch.zeros(2, *input_size, device=device, dtype=dtype)
            )
    finally:
        for module, mode in modes.items():
            module.training = mode
    return feats


def hcl_loss(
    fstudent_list: Sequence[torch.Tensor], fteacher_list: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Hierarchical context loss, summed over levels (mdistiller's ``hcl_loss``).

    Per level with height h: the full-resolution MSE has weight 1; then for pooling sizes
    l in (4, 2, 1) with l < h, the MSE of ``adaptive_avg_pool2d`` to l x l gets weight
    1/2, 1/4, 1/8 in turn (halved per *used* size); the sum is divided by the sum of the used
    weights. E.g. h = 8: (mse + mse4/2 + mse2/4 + mse1/8) / 1.875; h = 1: plain MSE.
    Computed in at least float32; the size checks read shapes only (CUDA-graph safe).
    """
    if len(fstudent_list) != len(fteacher_list) or len(fstudent_list) == 0:
        raise ValueError(
            f"hcl_loss: needs equally many (>= 1) student and teacher levels; got "
            f"{len(fstudent_list)} and {len(fteacher_list)}"
        )
    total = None
    with autocast_off(fstudent_list[0]):
        for idx, (fs, ft) in enumerate(zip(fstudent_list, fteacher_list, strict=True)):
            if fs.dim() != 4 or fs.shape != ft.shape:
                raise ValueError(
                    f"hcl_loss: level {idx} must be two [B, C, H, W] tensors of one shape; got "
                    f"student {tuple(fs.shape)} and teacher {tuple(ft.shape)}"
                )
            fs = upcast(fs)
            ft = upcast(ft).to(fs.dtype)
            height = fs.shape[2]
            level = F.mse_loss(fs, ft)
            weight, weight_sum = 1.0, 1.0
            for size in (4, 2, 1):
                if size >= height:
                    continue
                weight /= 2.0
                pooled_s = F.adaptive_avg_pool2d(fs, (size, size))
                pooled_t = F.adaptive_avg_pool2d(ft, (size, size))
                level = level + weight * F.mse_loss(pooled_s, pooled_t)
                weight_sum += weight
            level = level / weight_sum
            total = level if total is None else total + level
    return total
