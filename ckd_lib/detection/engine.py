"""The detection training loop: iterations, checkpoints, resume, DDP, COCO evaluation, records.

Same contract as the classification engine (docs/CONTRACTS.md): ``train_detection(config)``
skips a run whose complete record exists with the same config hash, resumes an interrupted one
from its last checkpoint (``<out_dir>/_checkpoints/<run_id>.pt``, written atomically every
``checkpoint_every`` iterations), and ends by writing ``<out_dir>/<run_id>/record.json`` and the
student's weights ``model_last.pth`` (``{"model", "spec"}``, which ``load_detector`` reads, so a
trained detector can be the next run's teacher).

Why a resumed run equals an uninterrupted one: iteration i's images, flips and the random
training size come from (seed, i) only (``TrainingBatches`` and a per-iteration reseed of torch's
generator, which also drives the RPN and RoI samplers); the optimizer's momentum is in the
checkpoint. Under torchrun each rank takes its slice of the global batch and the student (plus
ReviewKD's connectors) is wrapped in DistributedDataParallel (a backbone trained from scratch
keeps per-process BatchNorm statistics, broadcast from rank 0 before each forward, as
torchvision's reference does without --sync-bn); evaluation shards the validation
images over the ranks and rank 0 scores the gathered predictions with pycocotools.

Schedule: Detectron2's WarmupMultiStepLR (linear warm-up from ``warmup_factor`` x lr over
``warmup_iterations``, then x ``gamma`` at each milestone). Weight decay is not applied to
normalisation parameters (Detectron2's WEIGHT_DECAY_NORM = 0). bf16 autocast (CUDA) covers the
backbones and FPNs only; RPN and RoI heads, box decoding and all losses run in float32, because
bf16's 8-bit mantissa would put proposal corners several pixels off at 1333-pixel images.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader

from ckd_lib import results
from ckd_lib.detection.coco import CocoDetection, collate_detection
from ckd_lib.detection.config import DetectionConfig
from ckd_lib.detection.distill import DetectionDistiller
from ckd_lib.detection.evaluate import METRIC_NAMES, evaluate_coco, to_coco_results
from ckd_lib.detection.models import (
    COCO_CATEGORY_IDS,
    DetectorSpec,
    SpecTransform,
    build_detector,
    coco91_to_81,
    load_backbone_weights,
    load_detector,
)
from ckd_lib.detection.sampler import TrainingBatches
from ckd_lib.engine import stop
from ckd_lib.engine.bookkeeping import RunBook, RunLock, check_out_dir, divergence_message
from ckd_lib.engine.distributed import DistContext, init_distributed
from ckd_lib.engine.objective import term_states
from ckd_lib.engine.speed import resolve_device
from ckd_lib.errors import InputError, RunDivergedError
from ckd_lib.methods import loaded_plugins
from ckd_lib.models.checkpoint import file_sha256

__all__ = ["DetectionTrainer", "evaluate_detector", "load_teacher_detector", "lr_at",
           "train_detection"]

_NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


def lr_at(config: DetectionConfig, iteration: int) -> float:
    """The learning rate of (0-based) ``iteration``: Detectron2's WarmupMultiStepLR."""
    factor = config.gamma ** sum(1 for m in config.milestones if m <= iteration)
    if iteration < config.warmup_iterations:
        alpha = iteration / config.warmup_iterations
        factor *= config.warmup_factor * (1 - alpha) + alpha
    return config.lr * factor


def _step_seed(seed: int, iteration: int, rank: int) -> int:
    return (seed * 1_000_003 + iteration * 7919 + rank * 104_729) % (2**63 - 1)


def load_teacher_detector(config: DetectionConfig, num_classes: int,
                          category_ids: list[int]) -> tuple[nn.Module, dict]:
    """The run's teacher and what the record says about it."""
    source = config.teacher_checkpoint
    info = {"backbone": config.teacher, "checkpoint": source, "sha256": None}
    if source == "untrained":
        torch.manual_seed(_step_seed(config.seed, -1, 0))
        teacher = build_detector(DetectorSpec(config.teacher, kind=config.kind,
                                              num_classes=num_classes))
    elif source == "torchvision":
        import torchvision.models.detection as tvd

        if list(category_ids) != list(COCO_CATEGORY_IDS):
            raise ValueError("torchvision's COCO teacher predicts the 80 COCO categories; this "
                             f"dataset has categories {category_ids}")
        weights = (tvd.MaskRCNN_ResNet50_FPN_Weights.COCO_V1 if config.kind == "mask_rcnn"
                   else tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1)
        teacher = build_detector(DetectorSpec("resnet50", kind=config.kind, num_classes=81))
        teacher.load_state_dict(coco91_to_81(weights.get_state_dict(progress=False)))
        info["checkpoint"] = f"torchvision:{weights}"
    else:
        teacher = load_detector(source)
        info["sha256"] = file_sha256(source)
        spec = teacher.spec
        if spec.backbone != config.teacher or spec.kind != config.kind:
            raise ValueError(f"teacher checkpoint {source} holds a {spec.kind} {spec.backbone}; "
                             f"the config asks for a {config.kind} {config.teacher}")
        if spec.num_classes != num_classes:
            raise ValueError(f"teacher checkpoint {source} predicts {spec.num_classes} classes "
                             f"(background included); the dataset has {num_classes}")
    # The teacher is evaluated at the run's test size, like the student.
    teacher.spec = teacher.spec.replace(test_min_size=config.test_min_size,
                                        max_size=config.max_size)
    teacher.transform = SpecTransform(teacher.spec)
    info["spec"] = teacher.spec.to_dict()
    return teacher, info


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (no_decay if isinstance(module, _NORM_TYPES) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _to_device(images, targets, device):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
                for k, v in t.items()} for t in targets]
    return images, targets


@torch.no_grad()
def evaluate_detector(model: nn.Module, dataset: CocoDetection, device: torch.device,
                      dist: DistContext | None = None, images_per_batch: int = 4,
                      workers: int = 0) -> dict:
    """COCO metrics of ``model`` on ``dataset`` (box, and mask for Mask R-CNN), in percent.

    Each rank predicts its shard of the images and turns each batch's outputs into COCO result
    entries at once (masks become RLE), so no full-size mask is kept; rank 0 gathers the
    entries and scores them with pycocotools, and every rank returns rank 0's metrics.
    Runs in float32.
    """
    dist = dist or DistContext()
    masks = model.spec.kind == "mask_rcnn"
    was_training = model.training
    model.eval()
    shard = list(range(dist.rank, len(dataset), dist.world_size))
    loader = DataLoader(dataset, batch_size=images_per_batch, sampler=shard,
                        collate_fn=collate_detection, num_workers=workers)
    entries: list[dict] = []
    image_ids: list[int] = []
    for images, targets in loader:
        outputs = model([im.to(device) for im in images])
        batch = {int(t["image_id"]): {k: v.cpu() for k, v in out.items()}
                 for t, out in zip(targets, outputs, strict=True)}
        entries += to_coco_results(batch, dataset.category_ids, masks=masks)
        image_ids += list(batch)
    model.train(was_training)
    if dist.enabled:
        gathered: list = [None] * dist.world_size
        torch_dist.all_gather_object(gathered, (entries, image_ids))
        entries = [e for part in gathered for e in part[0]]
        image_ids = [i for part in gathered for i in part[1]]
    metrics = None
    if dist.is_main:
        metrics = evaluate_coco(dataset.coco, entries,
                                iou_types=("bbox", "segm") if masks else ("bbox",),
                                image_ids=sorted(image_ids))
        metrics["images"] = len(image_ids)
    return dist.broadcast_object(metrics)


def _teacher_metrics(config: DetectionConfig, teacher: nn.Module, info: dict,
                     val_set: CocoDetection, device: torch.device, dist: DistContext) -> dict:
    """The teacher's own AP on the validation images, computed once per teacher and data."""
    key = json.dumps([info["checkpoint"], info["sha256"], config.val_split, config.val_limit,
                      config.test_min_size, config.max_size,
                      str(Path(config.data_root).resolve())])
    cache = Path(config.out_dir) / "_teachers" / (
        f"{config.teacher}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json")
    cached = dist.broadcast_object(json.loads(cache.read_text()) if dist.is_main
                                   and cache.is_file() else None)
    if cached is not None:
        return cached
    metrics = evaluate_detector(teacher, val_set, device, dist, config.eval_images_per_batch,
                                config.workers)
    if dist.is_main:
        results.atomic_write_json(cache, metrics)
    return metrics


class _Window:
    """Sums of the logged losses since the last log line (kept on the device: no sync)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.started = time.perf_counter()

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach().float()
        self.steps += 1

    def state(self) -> dict:
        """What a checkpoint keeps of the window, so a resumed run logs what an uninterrupted
        one would (the seconds restart)."""
        return {"sums": {k: v.detach().cpu() for k, v in self.sums.items()}, "steps": self.steps}

    def restore(self, state: dict | None, device) -> None:
        if state:
            self.sums = {k: v.to(device) for k, v in state["sums"].items()}
            self.steps = state["steps"]

    def entry(self, iteration: int, lr: float, images: int) -> dict:
        means = {k: float(v) / self.steps for k, v in self.sums.items()}
        seconds = time.perf_counter() - self.started
        return {"iteration": iteration, "lr": lr, "loss": sum(means.values()), **means,
                "seconds": seconds, "images": images * self.steps}


def _summary(entry: dict | None) -> dict:
    if entry is None:
        return {"iteration": None, **{m: None for m in METRIC_NAMES}}
    out = {"iteration": entry["iteration"], **{m: entry["bbox"][m] for m in METRIC_NAMES}}
    if "segm" in entry:
        out.update({f"mask_{m}": entry["segm"][m] for m in METRIC_NAMES})
    return out


def train_detection(config: DetectionConfig, stop_after: int | None = None,
                    lock_wait: float = 0.0) -> dict:
    """Train (or resume, or skip) one detection run; returns its record.

    ``stop_after``: leave after that many iterations of this call with the checkpoint written
    and a "running" record (tests use it to interrupt a run deterministically). A stop request
    (``ckd_lib.engine.stop``: SIGTERM, SIGUSR1) checkpoints at the current iteration and raises
    ``RunInterrupted``; a non-finite loss or weight records the run as diverged and raises
    ``RunDivergedError``; another process training the run raises ``RunLockedError`` after
    ``lock_wait`` seconds.
    """
    return DetectionTrainer(config, lock_wait).run(stop_after)


class DetectionTrainer:
    """One detection run on the shared bookkeeping (``ckd_lib.engine.bookkeeping``)."""

    def __init__(self, config: DetectionConfig, lock_wait: float = 0.0):
        config.validate()
        self.config = config
        self.dist = init_distributed("cuda" if config.device != "cpu"
                                     and torch.cuda.is_available() else "cpu")
        self.device = resolve_device(config, self.dist.local_rank if self.dist.enabled else None)
        self.book = RunBook.for_config(config)  # with the inputs it would use now
        self.run_id = self.book.run_id
        self.lock_wait = lock_wait
        self.log = print if self.dist.is_main else (lambda *a, **k: None)

    def run(self, stop_after: int | None = None) -> dict:
        dist = self.dist
        if dist.is_main:
            check_out_dir(self.config.out_dir)
        # Decisions that read files are rank 0's, shared, so ranks never take different paths.
        done = dist.broadcast_object(self.book.finished(self.log) if dist.is_main else None)
        if done is not None:
            if done["status"] == "diverged":
                raise RunDivergedError(divergence_message(done))
            return done
        lock = RunLock([self.book.lock_path])
        failure = None
        if dist.is_main:
            try:
                lock.acquire(wait=self.lock_wait)
            except Exception as error:  # noqa: BLE001 - shared with the ranks, raised below
                failure = error
        failure = dist.broadcast_object(failure)
        if failure is not None:
            raise failure
        try:
            return self._train(stop_after)
        finally:
            lock.release()

    # -- set-up ---------------------------------------------------------------------------------
    def _build(self) -> None:
        config, device, dist = self.config, self.device, self.dist
        masks = config.kind == "mask_rcnn"
        self.train_set = CocoDetection(config.data_root, config.train_split, train=True,
                                       masks=masks, limit=config.train_limit)
        self.val_set = CocoDetection(config.data_root, config.val_split, train=False,
                                     masks=masks, limit=config.val_limit)
        if list(self.train_set.category_ids) != list(self.val_set.category_ids):
            raise InputError(f"{config.train_split} and {config.val_split} have different "
                             "categories")
        num_classes = len(self.train_set.category_ids) + 1
        torch.manual_seed(_step_seed(config.seed, -2, 0))
        self.student = build_detector(config.student_spec(num_classes))
        self.teacher, self.teacher_info = None, None
        if config.method_spec.terms:
            self.teacher, self.teacher_info = load_teacher_detector(
                config, num_classes, list(self.train_set.category_ids))
        amp_dtype = torch.bfloat16 if config.amp == "bf16" and device.type == "cuda" else None
        self.distiller = DetectionDistiller(self.student, self.teacher, config.method,
                                            config.loss_params(), amp_dtype=amp_dtype).to(device)
        self.optimizer = torch.optim.SGD(_parameter_groups(self.distiller, config.weight_decay),
                                         lr=config.lr, momentum=config.momentum)
        self.model = self.distiller
        if dist.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.distiller, device_ids=[device.index] if device.type == "cuda" else None)

    def _restore(self) -> None:
        """The checkpoint's state, or the student's initial backbone weights."""
        self.start, self.train_log, self.history, self.elapsed = 0, [], [], 0.0
        self.window = _Window()
        saved = self.dist.broadcast_object(self.book.checkpoint_path.is_file()
                                           if self.dist.is_main else None)
        if saved:
            state = self.book.load_checkpoint(self.device)
            self.distiller.load_state_dict(state["distiller"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.start, self.elapsed = state["iteration"], state["elapsed"]
            self.train_log, self.history = state["train_log"], state["history"]
            self.window.restore(state.get("window"), self.device)
            self.log(f"{self.run_id}: resumed at iteration {self.start} from "
                     f"{self.book.checkpoint_path}")
        elif self.config.student_weights is not None:
            load_backbone_weights(self.student, self.config.student_weights)

    def _record_base(self) -> dict:
        config, dist = self.config, self.dist
        return {
            "record_version": results.RECORD_VERSION, "run_id": self.run_id,
            "config": config.to_dict(), "config_hash": self.book.config_hash,
            "seed": config.seed, "label": config.label, "task": "detection",
            "teacher": self.teacher_info,
            "data": {"root": str(Path(config.data_root).resolve()), "train": len(self.train_set),
                     "val": len(self.val_set), "categories": list(self.train_set.category_ids)},
            "distributed": {"world_size": dist.world_size, "backend": dist.backend,
                            "images_per_batch": config.images_per_batch,
                            "per_device_images": config.images_per_batch // dist.world_size},
            "provenance": {**results.git_state(), **results.environment(self.device),
                           "plugins": loaded_plugins()},
        }

    # -- checkpoints and evaluations ------------------------------------------------------------
    def _save_checkpoint(self, iteration: int) -> None:
        if self.dist.is_main:
            self.book.save_checkpoint({
                "iteration": iteration, "distiller": self.distiller.state_dict(),
                "optimizer": self.optimizer.state_dict(), "train_log": self.train_log,
                "history": self.history, "window": self.window.state(),
                "elapsed": self.elapsed + time.perf_counter() - self.started})
        self.dist.barrier()

    def _evaluate(self, iteration: int) -> None:
        config = self.config
        t0 = time.perf_counter()
        metrics = evaluate_detector(self.student, self.val_set, self.device, self.dist,
                                    config.eval_images_per_batch, config.workers)
        entry = {"iteration": iteration, "eval_seconds": time.perf_counter() - t0, **metrics}
        self.history.append(entry)
        self.log(f"{self.run_id}: iteration {iteration}: box AP {metrics['bbox']['AP']:.2f}"
                 + (f", mask AP {metrics['segm']['AP']:.2f}" if "segm" in metrics else ""))

    def _diverged(self, iteration: int, what: str, lr: float) -> RunDivergedError:
        record = {**self.record_base, "history": self.history, "train_log": self.train_log,
                  "best": _summary(None), "last": _summary(None), "iterations_done": iteration}
        divergence = {"iteration": iteration, "what": what, "lr": lr,
                      "record": str(self.book.record_path)}
        if self.dist.is_main:
            record = self.book.mark_diverged(record, divergence)
        else:
            record = {**record, "status": "diverged", "diverged": divergence}
        return RunDivergedError(divergence_message(record))

    # -- the loop -------------------------------------------------------------------------------
    def _train(self, stop_after: int | None) -> dict:
        config, dist, device = self.config, self.dist, self.device
        self._build()
        self._restore()
        if self.teacher_info is not None:
            self.teacher_info["metrics"] = _teacher_metrics(config, self.teacher,
                                                            self.teacher_info, self.val_set,
                                                            device, dist)
        self.record_base = self._record_base()
        end = config.iterations if stop_after is None else min(config.iterations,
                                                               self.start + stop_after)
        batches = TrainingBatches(len(self.train_set), config.images_per_batch,
                                  seed=config.seed, start_iteration=self.start,
                                  stop_iteration=end, rank=dist.rank,
                                  world_size=dist.world_size)
        loader = DataLoader(self.train_set, batch_sampler=batches, collate_fn=collate_detection,
                            num_workers=config.workers, pin_memory=device.type == "cuda")
        self.started = time.perf_counter()
        self.model.train()
        iteration = self.start
        for images, targets in loader:
            lr = lr_at(config, iteration)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(_step_seed(config.seed, iteration, dist.rank))
            images, targets = _to_device(images, targets, device)
            losses = self.model(images, targets)
            total = sum(losses.values())
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            self.window.add(losses)
            iteration += 1
            if iteration % config.log_every == 0 or iteration == end:
                entry = self.window.entry(iteration, lr, config.images_per_batch)
                bad = [k for k, v in entry.items() if isinstance(v, float)
                       and not math.isfinite(v)]
                if bad:
                    raise self._diverged(iteration, f"{', '.join(bad)} is not finite", lr)
                self.train_log.append(entry)
                self.log(f"{self.run_id}: iteration {iteration}/{config.iterations} lr {lr:.5f} "
                         f"loss {entry['loss']:.4f} ({entry['images'] / entry['seconds']:.1f} "
                         "img/s)")
                self.window = _Window()
            if config.eval_every and iteration % config.eval_every == 0 \
                    and iteration < config.iterations:
                self._evaluate(iteration)
            if stop.step_done():
                self._save_checkpoint(iteration)
                self._write_running(iteration)
                reason = stop.reason()
                stop.clear()
                raise stop.RunInterrupted(f"{reason}: {self.run_id} stopped at iteration "
                                          f"{iteration}, checkpoint written; the same command "
                                          "resumes it there")
            if iteration % config.checkpoint_every == 0 or iteration == end:
                if not all(torch.isfinite(p).all() for p in self.distiller.parameters()):
                    raise self._diverged(iteration, "the weights are not finite", lr)
                self._save_checkpoint(iteration)
        if iteration < config.iterations:
            return self._write_running(iteration)
        self._evaluate(iteration)
        self.elapsed += time.perf_counter() - self.started
        train_seconds = sum(e["seconds"] for e in self.train_log)
        images = sum(e["images"] for e in self.train_log)
        best = max(self.history, key=lambda e: e["bbox"]["AP"])
        record = {**self.record_base, "history": self.history, "train_log": self.train_log,
                  "best": _summary(best), "last": _summary(self.history[-1]),
                  "iterations_done": iteration, "train_seconds": train_seconds,
                  "wall_seconds": self.elapsed,
                  "images_per_second": images / train_seconds if train_seconds else None}
        if dist.is_main:
            model_state = {"model": self.student.state_dict(), "spec": self.student.spec.to_dict(),
                           "run_id": self.run_id, "box_AP": self.history[-1]["bbox"]["AP"]}
            if terms := term_states(self.distiller.parts):  # what the terms trained
                model_state["objective"] = terms
            record = self.book.finish(record, model_state)
        else:
            record["status"] = "complete"
        dist.barrier()
        return record

    def _write_running(self, iteration: int) -> dict:
        record = {**self.record_base, "status": "running", "history": self.history,
                  "train_log": self.train_log, "best": _summary(None), "last": _summary(None),
                  "iterations_done": iteration}
        if self.dist.is_main:
            self.book.write_record(record)
        return record
