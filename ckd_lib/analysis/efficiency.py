"""Cost of the methods: time per training iteration and memory, and the CKD loss alone.

The step timed is the engine's own (``ckd_lib.engine.objective`` objectives, the teacher under
``no_grad``), run eagerly in float32 on random CIFAR-shaped inputs, so the methods are compared
on the same footing and no dataset is needed. Memory: on CUDA the peak allocated during the timed
steps; on every device the bytes autograd keeps for the backward pass (activations, counted once
per storage, parameters excluded), a device-independent measure of what a method adds.

Time is measured *interleaved* (:func:`interleaved_times`): every method is built first, then
``rounds`` rounds each time ``steps`` iterations of every method, in an order rotated from round
to round. A busy moment of the machine then slows every method of that round instead of one
method's whole measurement, and the per-round ratio of two methods (:func:`cost_ratios`) pairs
iterations measured side by side. An ordering that cannot be true (a method without a teacher
slower than one that runs a teacher and the same student) marks the measurement as noisy
(:func:`ordering_problem`): the report then prints no ratio from it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

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


def _training_step(method: str, teacher: str | None, student: str, batch_size: int,
                   num_classes: int, dev: torch.device, loss: dict | None, seed: int):
    """One method's training iteration as a closure, with what the measurement reports."""
    from ckd_lib.engine.objective import build_objective  # imports the engine (and tqdm) lazily

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

    all_params = params + (list(t_model.parameters()) if t_model is not None else [])
    info = {"method": method, "teacher": teacher if uses_teacher else None, "student": student,
            "batch_size": batch_size, "num_classes": num_classes, "device": str(dev),
            "threads": torch.get_num_threads() if dev.type == "cpu" else None,
            "trainable_parameters": sum(p.numel() for p in params)}
    return forward_backward, all_params, info


def interleaved_times(steps: dict[str, Callable[[], None]], rounds: int, iterations: int,
                      warmup: int = 0, sync: Callable[[], None] = lambda: None,
                      before: Callable[[str], None] = lambda name: None,
                      after: Callable[[str], None] = lambda name: None) -> dict[str, list]:
    """Seconds of each call of each step, per round: ``{name: [[round 0 times], ...]}``.

    Each step is called ``warmup`` times first (untimed). Then, in each round, every step is
    timed for ``iterations`` calls, the order of the steps rotated by one each round, so no
    step always runs first or last. ``before``/``after`` run around each step's calls of a round
    (e.g. to reset and read a peak-memory counter)."""
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    sync()
    times: dict[str, list] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)] if names else []
        for name in order:
            before(name)
            current = []
            for _ in range(iterations):
                t0 = time.perf_counter()
                steps[name]()
                sync()
                current.append(time.perf_counter() - t0)
            after(name)
            times[name].append(current)
    return times


def time_methods(methods, teacher: str | None, student: str, batch_size: int = 64,
                 num_classes: int = 100, device: str = "auto", steps: int = 20,
                 warmup: int = 5, rounds: int = 5, loss: dict | None = None,
                 seed: int = 0) -> list[dict]:
    """Milliseconds per training iteration of each method (teacher forward, student forward and
    backward, SGD update) measured interleaved (see the module docstring), and its memory.

    Each row: ``ms_per_iter`` the median of all timed iterations, ``round_ms`` the median of
    each round, ``ms_per_iter_min``/``_max`` the fastest and slowest round's median."""
    dev = _device(device)
    built = {m: _training_step(m, teacher, student, batch_size, num_classes, dev, loss, seed)
             for m in methods}
    peaks: dict[str, float] = {}

    def before(name):
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)

    def after(name):
        if dev.type == "cuda":
            peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated(dev) / 2**20)

    times = interleaved_times({m: step for m, (step, _, _) in built.items()}, rounds, steps,
                              warmup, lambda: _sync(dev), before, after)
    rows = []
    for method, (step, params, info) in built.items():
        per_round = [1000 * statistics.median(t) for t in times[method]]
        every = [1000 * v for t in times[method] for v in t]
        rows.append({**info,
                     "ms_per_iter": statistics.median(every),
                     "ms_per_iter_mean": statistics.fmean(every),
                     "ms_per_iter_min": min(per_round), "ms_per_iter_max": max(per_round),
                     "round_ms": per_round, "rounds": rounds, "steps": steps,
                     "peak_memory_mb": peaks.get(method),
                     "saved_activations_mb": saved_tensor_bytes(step, exclude=params) / 2**20})
    problem = ordering_problem(rows)
    for row in rows:
        row["noisy"] = problem
    return rows


def time_training_step(method: str, teacher: str | None, student: str, **kwargs) -> dict:
    """One method alone (no other method to interleave with): :func:`time_methods`'s row."""
    return time_methods([method], teacher, student, **kwargs)[0]


def _needs_teacher(method: str) -> bool | None:
    from ckd_lib.errors import InputError
    from ckd_lib.methods import get_method

    try:
        return get_method(method).needs_teacher
    except InputError:
        return None


def ordering_problem(rows: list[dict]) -> str:
    """Why a timing cannot be true, or "": a method without a teacher (the student alone) that
    is not faster than a method running a teacher forward and the same student."""
    rows = [r for r in rows if isinstance(r, dict) and isinstance(r.get("ms_per_iter"),
                                                                    (int, float))]
    alone = [r for r in rows if _needs_teacher(str(r.get("method"))) is False]
    taught = [r for r in rows if _needs_teacher(str(r.get("method")))]
    for a in alone:
        for t in taught:
            if a["ms_per_iter"] >= t["ms_per_iter"]:
                return (f"{a['method']} (no teacher) measured {a['ms_per_iter']:.3g} ms per "
                        f"iteration, not less than {t['method']} (teacher and student) at "
                        f"{t['ms_per_iter']:.3g} ms: another process competed for the device; "
                        "measure again on an idle machine")
    return ""


def cost_ratios(data: dict, method: str, reference: str) -> dict | None:
    """``method``'s time and memory over ``reference``'s from an efficiency artifact: the
    per-round time ratios (rounds measured side by side; a single ratio of medians for an
    artifact without rounds), the activation-memory ratio, the noise verdict and where it was
    measured. None when either method is missing."""
    rows = {r.get("method"): r for r in data.get("rows") or [] if isinstance(r, dict)}
    if method not in rows or reference not in rows:
        return None
    a, b = rows[method], rows[reference]
    if a.get("round_ms") and b.get("round_ms") and len(a["round_ms"]) == len(b["round_ms"]):
        per_round = [x / y for x, y in zip(a["round_ms"], b["round_ms"], strict=True) if y]
    else:
        per_round = [a["ms_per_iter"] / b["ms_per_iter"]] if a.get("ms_per_iter") and \
            b.get("ms_per_iter") else []
    memory = (a["saved_activations_mb"] / b["saved_activations_mb"]
              if a.get("saved_activations_mb") and b.get("saved_activations_mb") else None)
    noisy = a.get("noisy")
    if noisy is None:  # an artifact measured before the check existed
        noisy = ordering_problem(list(rows.values()))
    threads = f", {a['threads']} threads" if a.get("threads") else ""
    return {"time_per_round": per_round, "memory": memory, "noisy": noisy,
            "where": f"{a.get('device', '?')}{threads}, batch {a.get('batch_size')}"}


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
