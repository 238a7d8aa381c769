"""Cost of the methods: time per training iteration and memory, and the CKD loss alone.

The step timed is the engine's own (``ckd_lib.engine.objective`` objectives, the teacher under
``no_grad``), run eagerly in float32 on random CIFAR-shaped inputs, so the methods are compared
on the same footing and no dataset is needed. Time: median over ``steps`` iterations after
``warmup`` (each synchronised on CUDA). Memory: on CUDA the peak allocated during the timed
steps; on every device the bytes autograd keeps for the backward pass (activations, counted once
per storage, parameters excluded), a device-independent measure of what a method adds.
"""

from __future__ import annotations

import statistics
import time

import torch

from ckd_lib.config import RunConfig
from ckd_lib.losses import ckd_loss, kd_loss
from ckd_lib.models import create_model


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def saved_tensor_bytes(fn, exclude: list[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs."""
    skip = {p.untyped_storage().data_ptr() for p in exclude}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def time_training_step(method: str, teacher: str | None, student: str, batch_size: int = 64,
                       num_classes: int = 100, device: str = "auto", steps: int = 20,
                       warmup: int = 5, loss: dict | None = None, seed: int = 0) -> dict:
    """Milliseconds per training iteration of ``method`` (teacher forward, student forward and
    backward, SGD update) and its memory; see the module docstring."""
    from ckd_lib.engine.objective import build_objective  # imports the engine (and tqdm) lazily

    dev = _device(device)
    torch.manual_seed(seed)
    uses_teacher = method != "CE"
    t_model = None
    if uses_teacher:
        t_model = create_model(teacher, num_classes=num_classes).to(dev).eval()
        for p in t_model.parameters():
            p.requires_grad_(False)
    s_model = create_model(student, num_classes=num_classes)
    cfg = RunConfig(student=student, method=method, teacher=teacher if uses_teacher else None,
                    loss=dict(loss or {}))
    objective = build_objective(cfg, s_model, t_model).to(dev)
    s_model = s_model.to(dev).train()
    params = list(s_model.parameters()) + list(objective.parameters())
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 3, 32, 32, generator=g).to(dev)
    y = torch.randint(0, num_classes, (batch_size,), generator=g).to(dev)
    factor = torch.ones((), device=dev)
    feats = objective.needs_features

    def forward_backward():
        logits_t = feats_t = None
        if t_model is not None:
            with torch.no_grad():
                logits_t, feats_t = t_model.forward_features(x) if feats else (t_model(x), None)
        logits_s, feats_s = s_model.forward_features(x) if feats else (s_model(x), None)
        terms = objective(logits_s, logits_t, y, factor, feats_s, feats_t)
        total = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    for _ in range(warmup):
        forward_backward()
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        forward_backward()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    all_params = params + (list(t_model.parameters()) if t_model is not None else [])
    saved = saved_tensor_bytes(forward_backward, exclude=all_params)
    student_params = sum(p.numel() for p in params)
    return {
        "method": method, "teacher": teacher if uses_teacher else None, "student": student,
        "batch_size": batch_size, "num_classes": num_classes, "device": str(dev),
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "ms_per_iter": 1000 * statistics.median(times),
        "ms_per_iter_mean": 1000 * statistics.fmean(times),
        "ms_per_iter_min": 1000 * min(times), "steps": steps,
        "peak_memory_mb": peak, "saved_activations_mb": saved / 2**20,
        "trainable_parameters": student_params,
    }


def time_loss(batch_sizes, num_classes: int = 100, device: str = "auto", repeats: int = 20,
              losses=("CKD", "KD"), temperature: float = 1.0, seed: int = 0) -> list[dict]:
    """Milliseconds of one forward + backward of the loss alone on random logits, per batch size.

    CKD builds a B×B similarity matrix, so its cost grows with B², against KD's B; this measures
    how much that matters at the batch sizes of the study.
    """
    dev = _device(device)
    g = torch.Generator().manual_seed(seed)
    functions = {"CKD": lambda s, t: ckd_loss(s, t, temperature=temperature),
                 "KD": lambda s, t: kd_loss(s, t, 4.0)}
    rows = []
    for batch in batch_sizes:
        s0 = torch.randn(batch, num_classes, generator=g).to(dev)
        t = torch.randn(batch, num_classes, generator=g).to(dev)
        for name in losses:
            fn = functions[name]
            times = []
            for i in range(repeats + 3):
                s = s0.clone().requires_grad_(True)
                _sync(dev)
                t0 = time.perf_counter()
                fn(s, t).backward()
                _sync(dev)
                if i >= 3:
                    times.append(time.perf_counter() - t0)
            rows.append({"loss": name, "batch_size": int(batch), "num_classes": num_classes,
                         "device": str(dev), "ms": 1000 * statistics.median(times)})
    return rows
