"""Batched JPEG decoding with torchvision (nvJPEG on CUDA, libjpeg-turbo on the CPU).

Why torchvision and not DALI: it is already a dependency, ``decode_jpeg`` on a list of byte
tensors with ``device="cuda"`` runs nvJPEG's batched decoder (the hardware JPEG engines of
A100/H100-class cards for baseline JPEGs, CUDA kernels otherwise), and the same call with
``device="cpu"`` runs libjpeg-turbo, which is how the path is tested without a GPU.

The payloads arrive routed by the workers (:mod:`ckd_lib.data.jpeg_samples`): encoded JPEG bytes,
or images the workers already decoded. If the batched call still fails (a file nvJPEG rejects
although PIL called it an RGB JPEG), each image of that batch is retried alone, and one that
fails again is decoded with PIL on the CPU, so a single odd file never stops an epoch.

torchvision 0.29 deprecates its image decoders in favour of TorchCodec and warns on every call;
the warning is filtered here (the functions still work, and a newer TorchCodec is not a
dependency). See the README's note on the loader.
"""

from __future__ import annotations

import warnings
from collections import Counter

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from .jpeg_samples import decode_with_pil

warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of "
                        "TorchVision are deprecated", category=DeprecationWarning)

# How each image of a batch was decoded, counted in the Counter passed to decode_rgb.
ON_DEVICE = "device"  # the batched decoder on the loader's device
IN_WORKER = "worker_pil"  # routed to PIL by the worker (CMYK, greyscale, not a JPEG)
RETRIED_ALONE = "device_alone"  # batched call failed; this image decoded alone on the device
PIL_AFTER_FAILURE = "pil_after_failure"  # the device decoder refused it; PIL in this process


def _decode_alone(data: torch.Tensor, device: torch.device, counts: Counter) -> torch.Tensor:
    try:
        image = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        counts[RETRIED_ALONE] += 1
        return image
    except RuntimeError:
        counts[PIL_AFTER_FAILURE] += 1
        return decode_with_pil(data.numpy().tobytes()).to(device)


def _decode_jpegs(jpegs: list[torch.Tensor], device: torch.device,
                  counts: Counter) -> list[torch.Tensor]:
    if not jpegs:
        return []
    try:
        images = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
    except (RuntimeError, TypeError):  # TypeError: a torchvision without list input (< 0.19)
        return [_decode_alone(data, device, counts) for data in jpegs]
    counts[ON_DEVICE] += len(images)
    return list(images)


def decode_rgb(payloads: list[torch.Tensor], encoded: list[bool], device: torch.device,
               counts: Counter | None = None) -> list[torch.Tensor]:
    """uint8 RGB ``[3, H, W]`` images on ``device``, in the order of ``payloads``.

    ``encoded[i]`` says whether ``payloads[i]`` is JPEG bytes (decoded here, all in one batched
    call) or an image already decoded (copied to ``device``). ``counts`` (optional) receives
    how many images took each route (the ``ON_DEVICE``... keys of this module).
    """
    counts = Counter() if counts is None else counts
    jpegs = [p for p, e in zip(payloads, encoded, strict=True) if e]
    decoded = iter(_decode_jpegs(jpegs, device, counts))
    out = []
    for payload, is_jpeg in zip(payloads, encoded, strict=True):
        if is_jpeg:
            out.append(next(decoded))
        else:
            counts[IN_WORKER] += 1
            out.append(payload.to(device))
    return out
