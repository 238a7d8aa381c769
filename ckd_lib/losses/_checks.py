"""Input validation and float32 compute helpers shared by every loss.

Why a separate module: each loss must refuse malformed input with the same clear message, and
must compute in at least float32 even when the caller runs under bf16/fp16 autocast (a
contrastive softmax over cosine similarities, or a KL at T=4, loses too much precision in bf16).
All checks here look only at shapes, dtypes and Python values, never at tensor *values*, so the
losses stay free of host synchronisation and CUDA-graph capturable.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def check_logits_pair(
    logits_student: torch.Tensor, logits_teacher: torch.Tensor, fn_name: str
) -> None:
    """Require two floating 2-D tensors ``[batch, classes]`` of the same, non-empty shape."""
    pair = (("logits_student", logits_student), ("logits_teacher", logits_teacher))
    shapes = (
        f"logits_student of shape {_shape(logits_student)}, "
        f"logits_teacher of shape {_shape(logits_teacher)}"
    )
    for label, x in pair:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{fn_name}: {label} must be a torch.Tensor; got {shapes}")
        if x.dim() != 2:
            raise ValueError(f"{fn_name}: logits must be 2-D [batch, classes]; got {shapes}")
        if not x.is_floating_point():
            raise ValueError(f"{fn_name}: {label} must be floating point, got dtype {x.dtype}")
    if logits_student.shape != logits_teacher.shape:
        raise ValueError(f"{fn_name}: student and teacher logits differ in shape; got {shapes}")
    if logits_student.shape[0] == 0 or logits_student.shape[1] == 0:
        raise ValueError(f"{fn_name}: logits must be non-empty; got {shapes}")


def check_temperature(temperature: object, fn_name: str, name: str = "temperature") -> None:
    """Accept a positive finite real number or a 0-d floating tensor (e.g. a learnable tau).

    A tensor's value is deliberately not inspected: reading it would force a host sync.
    Positivity of a learnable tau is guaranteed by construction (see LearnableTemperature).
    """
    if isinstance(temperature, torch.Tensor):
        if temperature.dim() != 0 or not temperature.is_floating_point():
            raise ValueError(
                f"{fn_name}: a tensor {name} must be a 0-d floating tensor; got shape "
                f"{tuple(temperature.shape)} and dtype {temperature.dtype}"
            )
        return
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not math.isfinite(float(temperature))
        or float(temperature) <= 0.0
    ):
        raise ValueError(
            f"{fn_name}: {name} must be a positive finite number or a 0-d tensor; "
            f"got {temperature!r}"
        )


def check_bool(value: object, fn_name: str, name: str) -> None:
    """Refuse truthy stand-ins ("yes", 1) for switches, so a typo in a config cannot pass."""
    if not isinstance(value, bool):
        raise ValueError(f"{fn_name}: {name} must be True or False; got {value!r}")


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` in at least float32 (float16/bfloat16 go up, float64 stays for gradcheck)."""
    return x.float() if x.dtype in _LOW_PRECISION else x


def upcast_scalar(value: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """Bring a tensor temperature/weight to ``like``'s dtype; Python numbers pass through."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype=like.dtype)
    return value


def autocast_off(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Context that disables autocast on ``x``'s device, so matmuls stay in float32.

    Casting the inputs up is not enough: under autocast ``a @ b`` would be cast back to bf16.
    """
    try:
        return torch.autocast(device_type=x.device.type, enabled=False)
    except (RuntimeError, ValueError):  # a device type autocast does not know: nothing to undo
        return contextlib.nullcontext()
