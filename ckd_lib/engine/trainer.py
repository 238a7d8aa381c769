"""The training loop: one teacher, one data stream, one or several students.

Students trained together share the teacher's forward pass and the batches, and each keeps its
own optimizer, schedule, history, checkpoint entry and record, so a student ends exactly where a
run of its own would. Every epoch the whole state (weights, momentum, objective parameters, RNG
states, history) is saved atomically; a restarted run continues from it and, because the data order
and augmentation of an epoch depend only on (seed, epoch), ends with the same weights.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ckd_lib import results
from ckd_lib.config import ConfigError, RunConfig
from ckd_lib.data import load_dataset, make_loader
from ckd_lib.engine.distributed import init_distributed
from ckd_lib.engine.evaluate import evaluate
from ckd_lib.engine.methods import Objective, StudentStep, build_objective
from ckd_lib.engine.optim import TensorLrSGD
from ckd_lib.engine.schedule import learning_rate, warmup_factor
from ckd_lib.engine.speed import GraphedStep, autocast_context, resolve_device, resolve_speed
from ckd_lib.engine.teachers import build_teacher
from ckd_lib.models import create_model

# Fields every student of one group must share: they define the data stream and the teacher.
SHARED_FIELDS = ("dataset", "data_root", "teacher", "teacher_checkpoint", "epochs", "batch_size",
                 "seed", "train_subset", "test_subset", "drop_last", "device", "loader",
                 "num_workers", "amp", "channels_last", "cuda_graphs", "eval_batch_size",
                 "out_dir", "checkpoint_every")
CHECKPOINT_FORMAT = 1


@dataclass
class StudentRun:
    """One student's model, objective, optimizer and bookkeeping inside a group."""

    config: RunConfig
    model: nn.Module
    objective: Objective
    optimizer: TensorLrSGD
    lr: torch.Tensor
    factor: torch.Tensor
    forward: nn.Module  # StudentStep, wrapped in DistributedDataParallel under torchrun
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.config.run_id()

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out_dir) / self.run_id


def check_group(configs: list[RunConfig]) -> None:
    """Students trained together must agree on everything that defines the shared data stream."""
    first = configs[0]
    for other in configs[1:]:
        for name in SHARED_FIELDS:
            if getattr(other, name) != getattr(first, name):
                raise ConfigError(
                    f"students trained together must share {name}: {getattr(first, name)!r} "
                    f"({first.student}, {first.method}) vs {getattr(other, name)!r} "
                    f"({other.student}, {other.method}); shared fields: {list(SHARED_FIELDS)}")
    ids = [c.run_id() for c in configs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"the same run appears twice in one group: {ids}")


def train(configs: RunConfig | list[RunConfig]) -> list[dict]:
    """Train the given runs (one, or several students sharing a teacher) and return their records.

    Runs whose complete record exists with the same config hash are not recomputed; an interrupted
    group resumes from its last checkpoint.
    """
    configs = [configs] if isinstance(configs, RunConfig) else list(configs)
    if not configs:
        raise ConfigError("no run to train")
    for config in configs:
        config.validate()
    check_group(configs)
    done = {c.run_id(): results.completed_record(c.out_dir, c.run_id(), c.config_hash())
            for c in configs}
    pending = [c for c in configs if done[c.run_id()] is None]
    if pending:
        for record in GroupTrainer(pending).run():
            done[record["run_id"]] = record
    return [done[c.run_id()] for c in configs]


class GroupTrainer:
    """Trains a validated group of students; see the module docstring."""

    def __init__(self, configs: list[RunConfig]):
        self.configs = configs
        self.shared = configs[0]
        self.dist = init_distributed(resolve_device(self.shared).type)
        self.device = resolve_device(self.shared,
                                     self.dist.local_rank if self.dist.enabled else None)
        self.speed = resolve_speed(self.shared, self.device, self.dist.world_size)
        if self.shared.batch_size % self.dist.world_size:
            raise ConfigError(f"batch_size={self.shared.batch_size} (the global batch) must be "
                              f"divisible by the world size {self.dist.world_size}")
        self.per_device_batch = self.shared.batch_size // self.dist.world_size
        self.log = print if self.dist.is_main else (lambda line: None)

    # -- set-up ---------------------------------------------------------------------------
    def _load_data(self) -> None:
        if self.shared.model_zoo == "imagenet":
            self._load_folder_data()
        else:
            self._load_small_data()
        self.data_info = {
            "name": self.shared.dataset, "train_size": len(self.train_set.labels),
            "test_size": len(self.test_set.labels), "num_classes": self.train_set.num_classes,
            "train_fingerprint": self.train_set.fingerprint(),
            "test_fingerprint": self.test_set.fingerprint(),
        }

    def _load_folder_data(self) -> None:
        """ImageNet/Places365: each rank loads its shard of every global batch from JPEGs."""
        from ckd_lib.data import load_imagefolder_dataset, make_imagenet_loader

        cfg, d = self.shared, self.dist
        self.train_set = load_imagefolder_dataset(cfg.dataset_base, "train", cfg.data_root,
                                                  subset=cfg.train_subset, seed=cfg.seed)
        self.test_set = load_imagefolder_dataset(cfg.dataset_base, "val", cfg.data_root,
                                                 subset=cfg.test_subset, seed=cfg.seed)
        self._check_batch()
        shard = {"rank": d.rank, "world_size": d.world_size, "num_workers": cfg.num_workers}
        if self.speed["loader"] == "nvjpeg":  # decodes on the run's device, yields there
            shard.update(device=self.device, channels_last=self.speed["channels_last"])
        self.train_loader = make_imagenet_loader(self.speed["loader"], self.train_set,
                                                 self.per_device_batch, train=True,
                                                 seed=cfg.seed, **shard)
        self.test_loader = make_imagenet_loader(
            self.speed["loader"], self.test_set, max(1, cfg.eval_batch_size // d.world_size),
            train=False, seed=cfg.seed, **shard)
        self.test_reduce = d.all_reduce_sum if d.enabled else None
        self.shard_batches = False

    def _check_batch(self) -> None:
        cfg = self.shared
        if cfg.batch_size > len(self.train_set.labels):
            raise ConfigError(f"batch_size={cfg.batch_size} is larger than the training set "
                              f"({len(self.train_set.labels)} images)")

    def _load_small_data(self) -> None:
        """32x32 datasets: the global batch comes from one seeded stream, each rank its slice."""
        cfg = self.shared
        self.train_set = load_dataset(cfg.dataset, "train", data_root=cfg.data_root,
                                      subset=cfg.train_subset, seed=cfg.seed)
        self.test_set = load_dataset(cfg.dataset, "test", data_root=cfg.data_root,
                                     subset=cfg.test_subset, seed=cfg.seed)
        self._check_batch()
        memory_format = {"channels_last": self.speed["channels_last"]}
        loader_args = {"num_workers": cfg.num_workers} if self.speed["loader"] == "torch" else {
            "device": self.device, **memory_format}
        self.train_loader = make_loader(self.speed["loader"], self.train_set, cfg.batch_size,
                                        train=True, seed=cfg.seed, drop_last=cfg.drop_last,
                                        **loader_args)
        self.test_loader = make_loader("gpu", self.test_set, cfg.eval_batch_size, train=False,
                                       seed=cfg.seed, device=self.device, **memory_format)
        self.test_reduce = None  # the test sets are small: every rank evaluates all of it
        self.shard_batches = self.dist.enabled

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.speed["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _load_teacher(self) -> None:
        cfg = self.shared
        self.teacher, self.teacher_info = None, None
        if cfg.teacher is None:
            return
        teacher, info = build_teacher(cfg.teacher, cfg.teacher_checkpoint,
                                      self.train_set.num_classes, cfg.model_zoo, cfg.seed)
        self.teacher = self._prepare_model(teacher).eval()
        measured = evaluate(self.teacher, self.test_loader, self.speed["amp"], self.test_reduce)
        self.teacher_info = {"name": cfg.teacher, "checkpoint": info.get("path"),
                             "sha256": info.get("sha256"),
                             "stored_accuracy": info.get("stored_accuracy"),
                             "test_top1": measured["top1"], "test_top5": measured["top5"]}

    def _build_student(self, config: RunConfig) -> StudentRun:
        torch.manual_seed(config.effective_init_seed)
        model = create_model(config.student, num_classes=self.train_set.num_classes,
                             dataset=config.model_zoo)
        objective = build_objective(config, model, self.teacher)
        model = self._prepare_model(model)
        objective = objective.to(self.device)
        lr = torch.zeros((), device=self.device)
        groups = [(list(model.parameters()), config.weight_decay)]
        review = getattr(objective, "review", None)
        if review is not None:  # connectors train with the student, with weight decay (mdistiller)
            groups.append((list(review.parameters()), config.weight_decay))
        temperature = getattr(objective, "temperature", None)
        if isinstance(temperature, nn.Module):  # a learnable τ is not weight-decayed
            groups.append((list(temperature.parameters()), 0.0))
        optimizer = TensorLrSGD(groups, lr=lr, momentum=config.momentum)
        forward = StudentStep(model, objective)
        if self.dist.enabled:  # only the student (and its objective) is wrapped; DDP broadcasts
            from torch.nn.parallel import DistributedDataParallel  # rank 0's initial weights

            forward = DistributedDataParallel(
                forward, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return StudentRun(config=config, model=model, objective=objective, optimizer=optimizer,
                          lr=lr, factor=torch.ones((), device=self.device), forward=forward)

    # -- one step ---------------------------------------------------------------------------
    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Teacher forward once; then each student's forward, backward and update.

        On CUDA with several students, each student works on a stream of its own that forks
        from the teacher's and joins before the step ends: at the recipes' small batches one
        student's kernels leave most of the GPU idle, and a captured graph keeps the streams as
        parallel branches, so the students run side by side.
        """
        amp = self.speed["amp"]
        feats_needed = any(s.objective.needs_features for s in self.students)
        logits_t = feats_t = None
        if self.teacher is not None:
            with torch.no_grad(), autocast_context(self.device, amp):
                if feats_needed:
                    logits_t, feats_t = self.teacher.forward_features(x)
                else:
                    logits_t = self.teacher(x)
        if not self.streams:
            for s in self.students:
                self._student_step(s, x, y, logits_t, feats_t)
            return
        main = torch.cuda.current_stream(self.device)
        for s, stream in zip(self.students, self.streams, strict=True):
            stream.wait_stream(main)
            with torch.cuda.stream(stream):
                self._student_step(s, x, y, logits_t, feats_t)
        for stream in self.streams:
            main.wait_stream(stream)

    def _student_step(self, s: StudentRun, x, y, logits_t, feats_t) -> None:
        """Forward, loss terms, backward, update, and the on-device running sums of one student."""
        s.optimizer.zero_grad()
        with autocast_context(self.device, self.speed["amp"]):
            logits_s, terms = s.forward(x, y, logits_t, feats_t, s.factor)
        loss = sum(terms.values())
        loss.backward()
        s.optimizer.step()
        with torch.no_grad():
            for name, value in terms.items():
                s.sums[name] += value.detach().float() * y.shape[0]
            s.sums["correct"] += (logits_s.detach().argmax(1) == y).sum()
            s.sums["count"] += y.shape[0]

    # -- checkpoints ------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        ids = "|".join(sorted(c.config_hash() for c in self.configs))
        name = hashlib.sha256(ids.encode()).hexdigest()[:16]
        return Path(self.shared.out_dir) / "_checkpoints" / f"group-{name}.pt"

    def _save_checkpoint(self, epochs_done: int) -> None:
        state = {
            "format": CHECKPOINT_FORMAT, "epochs_done": epochs_done,
            "run_ids": [s.run_id for s in self.students],
            "students": [{"model": s.model.state_dict(), "objective": s.objective.state_dict(),
                          "optimizer": s.optimizer.state_dict(), "history": s.history}
                         for s in self.students],
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "loader": {"kind": self.speed["loader"], "seed": self.shared.seed,
                               "next_epoch": epochs_done}},
            "elapsed": self.elapsed,
        }
        results.atomic_torch_save(state, self.checkpoint_path)

    def _restore_checkpoint(self) -> int:
        path = self.checkpoint_path
        if not path.is_file():
            return 0
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state.get("format") != CHECKPOINT_FORMAT or state["run_ids"] != [
                s.run_id for s in self.students]:
            raise RuntimeError(f"{path} belongs to another group of runs; move it away to restart")
        for s, saved in zip(self.students, state["students"], strict=True):
            s.model.load_state_dict(saved["model"])
            s.objective.load_state_dict(saved["objective"])
            s.optimizer.load_state_dict(saved["optimizer"])
            s.history = saved["history"]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in state["rng"]["cuda"]])
        self.elapsed = state["elapsed"]
        self.log(f"resumed {len(self.students)} run(s) from {path} after epoch "
                 f"{state['epochs_done']}")
        return state["epochs_done"]

    # -- records ----------------------------------------------------------------------------
    def _record(self, s: StudentRun, status: str) -> dict:
        history = s.history
        best = max(history, key=lambda h: h["test_top1"]) if history else None
        last = history[-1] if history else None
        train_seconds = sum(h["train_seconds"] for h in history)
        images = sum(h["train_images"] for h in history)

        def summary(h):
            return {"epoch": h["epoch"], "top1": h["test_top1"], "top5": h["test_top5"]} if h \
                else {"epoch": None, "top1": None, "top5": None}

        return {
            "record_version": results.RECORD_VERSION, "run_id": s.run_id, "status": status,
            "config": s.config.to_dict(), "config_hash": s.config.config_hash(),
            "seed": s.config.seed, "init_seed": s.config.effective_init_seed,
            "group": [c.run_id() for c in self.configs], "speed": self.speed,
            "distributed": {"world_size": self.dist.world_size, "backend": self.dist.backend,
                            "global_batch": s.config.batch_size,
                            "per_device_batch": self.per_device_batch,
                            "negatives_scope": s.config.loss_params().get("negatives_scope")},
            "data": self.data_info, "teacher": self.teacher_info, "history": history,
            "best": summary(best), "last": summary(last), "epochs_done": len(history),
            "train_seconds": train_seconds, "wall_seconds": self.elapsed,
            "images_per_second": images / train_seconds if train_seconds else None,
            "provenance": self.provenance,
        }

    def _save_model(self, s: StudentRun) -> None:
        """The final weights in the mdistiller checkpoint layout, so load_teacher reads them."""
        last = s.history[-1]
        results.atomic_torch_save({"model": s.model.state_dict(), "accuracy": last["test_top1"],
                                   "epoch": last["epoch"], "run_id": s.run_id},
                                  s.run_dir / "model_last.pth")

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> list[dict]:
        started = time.perf_counter()
        # the code and software this run starts with (read once: git is a subprocess)
        self.provenance = {**results.git_state(), **results.environment(self.device)}
        self._load_data()
        self._load_teacher()
        self.students = [self._build_student(c) for c in self.configs]
        parallel = self.device.type == "cuda" and len(self.students) > 1
        self.streams = [torch.cuda.Stream(self.device) for _ in self.students] if parallel else []
        self.elapsed = 0.0
        start_epoch = self._restore_checkpoint()
        elapsed_before = self.elapsed
        step = GraphedStep(self._step) if self.speed["cuda_graphs"] else self._step
        cfg = self.shared
        for s in self.students:
            s.sums = {name: torch.zeros((), device=self.device)
                      for name in ("correct", "count", *s.objective.terms)}
        bar = tqdm(range(start_epoch, cfg.epochs), desc=self._describe(), unit="epoch",
                   initial=start_epoch, total=cfg.epochs, disable=not cfg.progress)
        for epoch in bar:
            for s in self.students:
                s.lr.fill_(learning_rate(s.config, epoch))
                s.factor.fill_(warmup_factor(s.objective.warmup_epochs, epoch))
                s.model.train()
                for value in s.sums.values():
                    value.zero_()
            self.train_loader.set_epoch(epoch)
            self._sync()
            t0 = time.perf_counter()
            for x, y in self.train_loader:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                if self.shard_batches:
                    if x.shape[0] % self.dist.world_size:
                        continue  # a tail batch that cannot be split evenly over the ranks
                    b, r = x.shape[0] // self.dist.world_size, self.dist.rank
                    x, y = x[r * b:(r + 1) * b], y[r * b:(r + 1) * b]
                step(x, y)
            self._sync()
            train_seconds = time.perf_counter() - t0
            for s in self.students:
                t1 = time.perf_counter()
                s.model.eval()
                metrics = evaluate(s.model, self.test_loader, self.speed["amp"],
                                   self.test_reduce)
                eval_seconds = time.perf_counter() - t1
                s.history.append(self._epoch_entry(s, epoch, metrics, train_seconds,
                                                   eval_seconds))
                self.log(self._epoch_line(s, s.history[-1]))
            self.elapsed = elapsed_before + time.perf_counter() - started
            saving = (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs
            if saving and self.dist.is_main:  # only rank 0 writes
                self._save_checkpoint(epoch + 1)
                for s in self.students:
                    results.write_record(cfg.out_dir, self._record(s, "running"))
        bar.close()
        records = [self._record(s, "complete") for s in self.students]
        if self.dist.is_main:
            for s, record in zip(self.students, records, strict=True):
                self._save_model(s)
                results.write_record(cfg.out_dir, record)
            self.checkpoint_path.unlink(missing_ok=True)
        self.dist.barrier()
        return records

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _epoch_entry(self, s, epoch, metrics, train_seconds, eval_seconds) -> dict:
        for value in s.sums.values():  # each rank summed its own samples
            self.dist.all_reduce_sum(value)
        sums = {k: v.item() for k, v in s.sums.items()}
        count = max(sums.pop("count"), 1)
        entry = {"epoch": epoch + 1, "lr": s.lr.item(), "warmup_factor": s.factor.item(),
                 "train_top1": 100.0 * sums.pop("correct") / count}
        entry.update({f"loss_{k}": v / count for k, v in sums.items()})
        temperature = getattr(s.objective, "temperature", None)
        if isinstance(temperature, nn.Module):
            entry["tau"] = float(temperature().detach())
        entry.update({"test_top1": metrics["top1"], "test_top5": metrics["top5"],
                      "test_loss": metrics["loss"], "train_seconds": train_seconds,
                      "eval_seconds": eval_seconds, "train_images": int(count)})
        return entry

    def _describe(self) -> str:
        cfg = self.shared
        students = ", ".join(f"{c.student}/{c.method}" for c in self.configs)
        return f"{cfg.dataset} {cfg.teacher or '-'} -> {students}"

    @staticmethod
    def _epoch_line(s: StudentRun, h: dict) -> str:
        losses = " ".join(f"{k[5:]}={v:.4f}" for k, v in h.items() if k.startswith("loss_"))
        return (f"[{s.config.student}/{s.config.method} s{s.config.seed}] epoch {h['epoch']}/"
                f"{s.config.epochs} lr={h['lr']:.5f} {losses} train@1={h['train_top1']:.2f} "
                f"test@1={h['test_top1']:.2f} test@5={h['test_top5']:.2f} "
                f"({h['train_seconds']:.1f}s train, {h['eval_seconds']:.1f}s eval)")
