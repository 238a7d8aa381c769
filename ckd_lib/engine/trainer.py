"""The training loop: one teacher, one data stream, one or several students.

Students trained together share the teacher's forward pass and the batches, and each keeps its
own optimizer, schedule, history, checkpoint and record, so a student ends exactly where a run of
its own would. After every epoch (and whenever a stop is requested, between two steps) each
student's state (weights, momentum, objective parameters, RNG states, history, the position
inside the epoch) is saved atomically; a restarted run continues from it and, because the data
order and augmentation of an epoch depend only on (seed, epoch), ends with the same weights.

What is refused or recorded rather than trusted (``ckd_lib.engine.bookkeeping``): a run another
process is training (its lock), a complete record whose model file is missing or changed
(trained again), and a loss or weights that become non-finite: that student stops, its record
says ``diverged`` (never used as a teacher, never shown as a result) and the others go on.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ckd_lib import results
from ckd_lib.config import ConfigError, RunConfig
from ckd_lib.data import load_dataset, make_loader
from ckd_lib.engine import stop
from ckd_lib.engine.bookkeeping import RunBook, RunLock, check_out_dir, divergence_message
from ckd_lib.engine.distributed import DistContext, init_distributed
from ckd_lib.engine.evaluate import evaluate
from ckd_lib.engine.objective import Objective, StudentStep, build_objective
from ckd_lib.engine.optim import TensorLrSGD
from ckd_lib.engine.schedule import learning_rate, warmup_factor
from ckd_lib.engine.speed import GraphedStep, autocast_context, resolve_device, resolve_speed
from ckd_lib.engine.teachers import build_teacher
from ckd_lib.errors import RunDivergedError
from ckd_lib.methods import loaded_plugins
from ckd_lib.models import create_model

# Fields every student of one group must share: they define the data stream and the teacher.
SHARED_FIELDS = ("dataset", "data_root", "teacher", "teacher_checkpoint", "epochs", "batch_size",
                 "seed", "data_seed", "train_subset", "test_subset", "drop_last", "device",
                 "loader", "num_workers", "amp", "channels_last", "cuda_graphs",
                 "eval_batch_size", "out_dir", "checkpoint_every")
CHECKPOINT_FORMAT = 2
# Non-finite sums are looked for every this many steps (one host sync), and at every epoch's end.
DIVERGENCE_CHECK_STEPS = 50
# Under DDP the ranks agree on a stop request every this many steps (one small all-reduce).
STOP_SYNC_STEPS = 10


@dataclass
class StudentRun:
    """One student's model, objective, optimizer and bookkeeping inside a group."""

    config: RunConfig
    book: RunBook
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
        return self.book.run_id


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


def train(configs: RunConfig | list[RunConfig], *, lock_wait: float = 0.0,
          allow_diverged: bool = False) -> list[dict]:
    """Train the given runs (one, or several students sharing a teacher); their records.

    Runs whose complete record exists with the same config hash (and agrees with its model file)
    are not recomputed; interrupted ones resume from their checkpoints (students at different
    points train in separate passes). Everything that can be checked without data is checked
    first: the configs, the device, the output folder, the runs' locks (``lock_wait`` seconds
    for another process to finish). A run that diverges (now or before) makes this raise
    :class:`RunDivergedError` after the others finished, unless ``allow_diverged``: then its
    record (status "diverged") is returned in its place. A stop request raises
    :class:`ckd_lib.engine.stop.RunInterrupted` with every run's checkpoint written.
    """
    configs = [configs] if isinstance(configs, RunConfig) else list(configs)
    if not configs:
        raise ConfigError("no run to train")
    for config in configs:
        config.validate()
    check_group(configs)
    device = resolve_device(configs[0])  # no GPU for device=cuda: refused before any data
    dist = init_distributed(device.type)
    log = print if dist.is_main else (lambda line: None)
    if dist.is_main:
        check_out_dir(configs[0].out_dir)
    books = [RunBook.for_config(c) for c in configs]  # with the inputs each would use now
    # Decisions that read files are rank 0's, shared, so every rank takes the same path.
    state = dist.broadcast_object(_survey(books, log) if dist.is_main else None)
    done: dict[str, dict] = state["done"]
    pending = [(c, b) for c, b in zip(configs, books, strict=True) if b.run_id not in done]
    for progress in sorted({state["progress"][b.run_id] for _, b in pending}, reverse=True):
        part = [(c, b) for c, b in pending if state["progress"][b.run_id] == progress]
        for record in GroupTrainer([c for c, _ in part], dist=dist, lock_wait=lock_wait).run():
            done[record["run_id"]] = record
    records = [done[b.run_id] for b in books]
    diverged = [r for r in records if r["status"] == "diverged"]
    if diverged and not allow_diverged:
        error = RunDivergedError("\n".join(divergence_message(r) for r in diverged))
        error.records = records
        raise error
    return records


def load_split(config: RunConfig, train: bool):
    """The training or test set of ``config`` as the engine trains and evaluates on it (subsets
    drawn with ``data_seed``); ``--verify`` re-evaluates models on the same."""
    subset = config.train_subset if train else config.test_subset
    if config.model_zoo == "imagenet":
        from ckd_lib.data import load_imagefolder_dataset

        return load_imagefolder_dataset(config.dataset_base, "train" if train else "val",
                                        config.data_root, subset=subset, seed=config.data_seed)
    return load_dataset(config.dataset, "train" if train else "test", data_root=config.data_root,
                        subset=subset, seed=config.data_seed)


def _survey(books: list[RunBook], log) -> dict:
    """Which runs are done (complete, or diverged before, from the inputs they would use now),
    and how far each other one got."""
    done, progress = {}, {}
    for book in books:
        record = book.finished(log)
        if record is not None:
            if record["status"] == "diverged":
                log(divergence_message(record))
            done[book.run_id] = record
            continue
        saved = book.load_checkpoint() if book.checkpoint_path.is_file() else None
        progress[book.run_id] = (0, 0) if saved is None else (saved["epoch"], saved["batch"])
    return {"done": done, "progress": progress}


class GroupTrainer:
    """Trains a validated group of students; see the module docstring."""

    def __init__(self, configs: list[RunConfig], dist: DistContext | None = None,
                 lock_wait: float = 0.0):
        self.configs = configs
        self.shared = configs[0]
        self.dist = dist or init_distributed(resolve_device(self.shared).type)
        self.device = resolve_device(self.shared,
                                     self.dist.local_rank if self.dist.enabled else None)
        self.speed = resolve_speed(self.shared, self.device, self.dist.world_size)
        if self.shared.batch_size % self.dist.world_size:
            raise ConfigError(f"batch_size={self.shared.batch_size} (the global batch) must be "
                              f"divisible by the world size {self.dist.world_size}")
        self.per_device_batch = self.shared.batch_size // self.dist.world_size
        self.log = print if self.dist.is_main else (lambda line: None)
        self.lock_wait = lock_wait
        self.books = [RunBook(c.out_dir, c.run_id(), c.config_hash()) for c in configs]
        self.finished: list[dict] = []

    # -- set-up ---------------------------------------------------------------------------
    def _load_data(self) -> None:
        if self.shared.model_zoo == "imagenet":
            self._load_folder_data()
        else:
            self._load_small_data()
        source = getattr(self.train_set, "source", None)
        self.data_info = {
            "name": self.shared.dataset, "train_size": len(self.train_set.labels),
            "test_size": len(self.test_set.labels), "num_classes": self.train_set.num_classes,
            "train_fingerprint": self.train_set.fingerprint(),
            "test_fingerprint": self.test_set.fingerprint(),
            "subset_seed": self.shared.data_seed if self.shared.uses_subsets else None,
            "source": source,
        }

    def _load_folder_data(self) -> None:
        """ImageNet/Places365: each rank loads its shard of every global batch from JPEGs."""
        from ckd_lib.data import make_imagenet_loader

        cfg, d = self.shared, self.dist
        self.train_set, self.test_set = load_split(cfg, train=True), load_split(cfg, train=False)
        self._check_batch()
        shard = {"rank": d.rank, "world_size": d.world_size, "num_workers": cfg.num_workers}
        if self.speed["loader"] == "nvjpeg":  # decodes on the run's device, yields there
            shard.update(device=self.device, channels_last=self.speed["channels_last"])
        self.train_loader = make_imagenet_loader(self.speed["loader"], self.train_set,
                                                 self.per_device_batch, train=True,
                                                 seed=cfg.seed, **shard)
        self.test_loader = make_imagenet_loader(
            self.speed["loader"], self.test_set,
            max(1, self.speed["eval_batch_size"] // d.world_size), train=False, seed=cfg.seed,
            **shard)
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
        self.train_set, self.test_set = load_split(cfg, train=True), load_split(cfg, train=False)
        source = getattr(self.train_set, "source", None)
        if source:
            self.log(f"{cfg.dataset}: read from {source}")
        self._check_batch()
        memory_format = {"channels_last": self.speed["channels_last"]}
        loader_args = {"num_workers": cfg.num_workers} if self.speed["loader"] == "torch" else {
            "device": self.device, **memory_format}
        self.train_loader = make_loader(self.speed["loader"], self.train_set, cfg.batch_size,
                                        train=True, seed=cfg.seed, drop_last=cfg.drop_last,
                                        **loader_args)
        self.test_loader = make_loader("gpu", self.test_set, self.speed["eval_batch_size"],
                                       train=False, seed=cfg.seed, device=self.device,
                                       **memory_format)
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
        measured = self._teacher_metrics(info)
        self.teacher_info = {"name": cfg.teacher, "checkpoint": info.get("path"),
                             "sha256": info.get("sha256"),
                             "stored_accuracy": info.get("stored_accuracy"),
                             "test_top1": measured["top1"], "test_top5": measured["top5"]}

    def _teacher_metrics(self, info: dict) -> dict:
        """The teacher's test accuracy, measured once per (teacher file, test set, device kind,
        precision and memory format) and cached under ``<out_dir>/_teachers/``: every student of
        a study distilled from one teacher would otherwise evaluate it again."""
        cfg = self.shared
        identity = info.get("sha256") or [info.get("path"), cfg.teacher, cfg.seed,
                                          self.train_set.num_classes, cfg.model_zoo]
        key = hashlib.sha256(json.dumps([identity, self.test_set.fingerprint(),
                                         self.device.type, self.speed["amp"],
                                         self.speed["channels_last"]],
                                        default=str).encode()).hexdigest()[:16]
        path = Path(cfg.out_dir) / "_teachers" / f"{cfg.teacher}-{key}.json"
        cached = None
        if self.dist.is_main and path.is_file():
            try:
                cached = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                cached = None
        cached = self.dist.broadcast_object(cached)
        if cached is not None:
            return cached
        measured = evaluate(self.teacher, self.test_loader, self.speed["amp"], self.test_reduce)
        if self.dist.is_main:
            results.atomic_write_json(path, measured)
        return measured

    def _build_student(self, config: RunConfig, book: RunBook) -> StudentRun:
        torch.manual_seed(config.effective_init_seed)
        model = create_model(config.student, num_classes=self.train_set.num_classes,
                             dataset=config.model_zoo)
        objective = build_objective(config, model, self.teacher)
        model = self._prepare_model(model)
        objective = objective.to(self.device)
        lr = torch.zeros((), device=self.device)
        # the student's weights, then whatever the objective's terms train (their own groups)
        groups = [(list(model.parameters()), config.weight_decay),
                  *objective.param_groups(config.weight_decay)]
        optimizer = TensorLrSGD(groups, lr=lr, momentum=config.momentum)
        forward = StudentStep(model, objective)
        if self.dist.enabled:  # only the student (and its objective) is wrapped; DDP broadcasts
            from torch.nn.parallel import DistributedDataParallel  # rank 0's initial weights

            forward = DistributedDataParallel(
                forward, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return StudentRun(config=config, book=book, model=model, objective=objective,
                          optimizer=optimizer, lr=lr, factor=torch.ones((), device=self.device),
                          forward=forward)

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

    def _make_step(self):
        """The step as replayed: a CUDA graph over the current students, or the eager step.
        Rebuilt (recaptured) when a diverged student leaves the group."""
        parallel = self.device.type == "cuda" and len(self.students) > 1
        self.streams = [torch.cuda.Stream(self.device) for _ in self.students] if parallel else []
        return GraphedStep(self._step) if self.speed["cuda_graphs"] else self._step

    # -- checkpoints ------------------------------------------------------------------------
    def _save_checkpoints(self, epoch: int, batch: int, epoch_seconds: float) -> None:
        """Every student's state at batch ``batch`` of 0-based ``epoch`` (batch 0: the epoch has
        not started). The partial sums of an epoch are summed over the ranks first: rank 0's
        checkpoint then holds the whole epoch's so far."""
        partial = batch > 0
        sums = {}
        for s in self.students:
            sums[s.run_id] = {k: v.detach().clone() for k, v in s.sums.items()}
            if partial:
                for value in sums[s.run_id].values():
                    self.dist.all_reduce_sum(value)
        if not self.dist.is_main:
            return
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        for s in self.students:
            s.book.save_checkpoint({
                "format": CHECKPOINT_FORMAT, "epoch": epoch, "batch": batch,
                "model": s.model.state_dict(), "objective": s.objective.state_dict(),
                "optimizer": s.optimizer.state_dict(), "history": s.history,
                "sums": {k: v.cpu() for k, v in sums[s.run_id].items()} if partial else None,
                "epoch_seconds": epoch_seconds, "rng": rng, "elapsed": self.elapsed})

    def _restore_checkpoints(self) -> tuple[int, int, float]:
        """(epoch, batch, seconds already trained in that epoch) every student resumes from."""
        states = [s.book.load_checkpoint(self.device) for s in self.students]
        if all(state is None for state in states):
            return 0, 0, 0.0
        positions = {(st["epoch"], st["batch"]) if st else (0, 0) for st in states}
        if len(positions) != 1 or any(st is None or st.get("format") != CHECKPOINT_FORMAT
                                      for st in states):
            raise ConfigError(f"the runs {[s.run_id for s in self.students]} cannot resume "
                              f"together (their checkpoints stand at {sorted(positions)})")
        for s, state in zip(self.students, states, strict=True):
            s.model.load_state_dict(state["model"])
            s.objective.load_state_dict(state["objective"])
            s.optimizer.load_state_dict(state["optimizer"])
            s.history = state["history"]
            for name, value in (state["sums"] or {}).items():
                if self.dist.is_main:  # rank 0 carries the epoch's sums so far, others zero
                    s.sums[name].copy_(value)
        state = states[0]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in state["rng"]["cuda"]])
        self.elapsed = state["elapsed"]
        self.log(f"resumed {len(self.students)} run(s) at epoch {state['epoch'] + 1}, batch "
                 f"{state['batch']} (checkpoints in {self.books[0].checkpoint_path.parent})")
        return state["epoch"], state["batch"], state["epoch_seconds"]

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
                            "negatives_scope": s.objective.params.get("negatives_scope")},
            "data": self.data_info, "teacher": self.teacher_info, "history": history,
            "best": summary(best), "last": summary(last), "epochs_done": len(history),
            "train_seconds": train_seconds, "wall_seconds": self.elapsed,
            "images_per_second": images / train_seconds if train_seconds else None,
            "provenance": self.provenance,
        }

    def _finish(self, s: StudentRun) -> dict:
        """The final weights in the mdistiller checkpoint layout (load_teacher reads them; it
        ignores ``objective``, what the method's terms trained) and the complete record with
        their checksum."""
        last = s.history[-1]
        model_state = {"model": s.model.state_dict(), "accuracy": last["test_top1"],
                       "epoch": last["epoch"], "run_id": s.run_id}
        if terms := s.objective.term_states():
            model_state["objective"] = terms
        return s.book.finish(self._record(s, "complete"), model_state)

    # -- divergence ---------------------------------------------------------------------------
    def _non_finite(self, s: StudentRun, weights: bool) -> str | None:
        """What is non-finite in a student (its running loss sums, or its weights), or None.
        The terms that turned non-finite first are named: the others followed through the
        weights (a NaN from a plugin's term is not blamed on ``ce``)."""
        for name in s.objective.first_non_finite.names() or s.objective.terms:
            value = float(s.sums[name])
            if not math.isfinite(value):
                return f"loss term {name} is {value}"
        if weights:
            params = list(s.model.parameters()) + list(s.objective.parameters())
            if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
                return "its weights are not finite"
        return None

    def _check_divergence(self, epoch: int, batch: int, weights: bool) -> bool:
        """Stop and record every student that diverged; True if the group changed. The sums of
        all students are checked with one host sync; under DDP the ranks agree first."""
        flat = torch.stack([v.float() for s in self.students
                            for k, v in s.sums.items() if k in s.objective.terms])
        finite = torch.isfinite(flat).all().to(torch.int32)
        if weights:
            for s in self.students:
                params = list(s.model.parameters()) + list(s.objective.parameters())
                finite = finite * torch.stack([torch.isfinite(p).all() for p in params]).all()
        if self.dist.enabled:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if bool(finite):
            return False
        changed = False
        for s in list(self.students):
            what = self._non_finite(s, weights)
            if what is None and self.dist.enabled:
                what = "a non-finite loss or weight on another rank"
            if what is None:
                continue
            divergence = {"epoch": epoch + 1, "batch": batch, "what": what,
                          "lr": float(s.lr), "record": str(s.book.record_path)}
            record = self._record(s, "diverged")
            if self.dist.is_main:
                record = s.book.mark_diverged(record, divergence)
            else:
                record = {**record, "status": "diverged", "diverged": divergence}
            self.log(f"DIVERGED: {divergence_message(record)}")
            self.finished.append(record)
            self.students.remove(s)
            changed = True
        return changed

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> list[dict]:
        locks = RunLock([b.lock_path for b in self.books])
        failure = None
        if self.dist.is_main:
            try:
                locks.acquire(wait=self.lock_wait)
            except Exception as error:  # noqa: BLE001 - shared with the ranks, raised below
                failure = error
        failure = self.dist.broadcast_object(None if failure is None else failure)
        if failure is not None:
            raise failure
        try:
            return self._run()
        finally:
            locks.release()

    def _run(self) -> list[dict]:
        started = time.perf_counter()
        # the code, software and plugins this run starts with (read once: git is a subprocess)
        self.provenance = {**results.git_state(), **results.environment(self.device),
                           "plugins": loaded_plugins()}
        self._load_data()
        self._load_teacher()
        self.students = [self._build_student(c, b) for c, b in zip(self.configs, self.books,
                                                                   strict=True)]
        cfg = self.shared
        for s in self.students:
            s.sums = {name: torch.zeros((), device=self.device)
                      for name in ("correct", "count", *s.objective.terms)}
        self.elapsed = 0.0
        start_epoch, start_batch, seconds_before = self._restore_checkpoints()
        elapsed_before = self.elapsed
        step = self._make_step()
        bar = tqdm(range(start_epoch, cfg.epochs), desc=self._describe(), unit="epoch",
                   initial=start_epoch, total=cfg.epochs, disable=not cfg.progress)
        for epoch in bar:
            if not self.students:
                break
            resumed = epoch == start_epoch and start_batch > 0
            batch = start_batch if resumed else 0
            for s in self.students:
                s.lr.fill_(learning_rate(s.config, epoch))
                s.factor.fill_(warmup_factor(s.objective.warmup_epochs, epoch))
                s.model.train()
                if not resumed:
                    for value in s.sums.values():
                        value.zero_()
            self.train_loader.set_epoch(epoch, start_batch=batch)
            self._sync()
            t0 = time.perf_counter()
            offset = seconds_before if resumed else 0.0
            for x, y in self.train_loader:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                if self.shard_batches:
                    if x.shape[0] % self.dist.world_size:
                        continue  # a tail batch that cannot be split evenly over the ranks
                    b, r = x.shape[0] // self.dist.world_size, self.dist.rank
                    x, y = x[r * b:(r + 1) * b], y[r * b:(r + 1) * b]
                step(x, y)
                batch += 1
                if self._stop_requested(batch):
                    self._sync()
                    self.elapsed = elapsed_before + time.perf_counter() - started
                    self._save_checkpoints(epoch, batch, offset + time.perf_counter() - t0)
                    self._write_records("running")
                    reason = stop.reason()
                    stop.clear()  # honoured: a later call in this process starts afresh
                    raise stop.RunInterrupted(
                        f"{reason}: {len(self.students)} run(s) stopped at epoch "
                        f"{epoch + 1}, batch {batch}, checkpoints written; the same command "
                        "resumes them there")
                if batch % DIVERGENCE_CHECK_STEPS == 0 and \
                        self._check_divergence(epoch, batch, weights=False):
                    if not self.students:
                        break
                    step = self._make_step()
            if not self.students:
                break
            self._sync()
            train_seconds = offset + time.perf_counter() - t0
            if self._check_divergence(epoch, batch, weights=True):
                if not self.students:
                    break
                step = self._make_step()
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
            if saving:
                self._save_checkpoints(epoch + 1, 0, 0.0)
                self._write_records("running")
        bar.close()
        records = []
        for s in self.students:
            record = self._record(s, "complete")
            if self.dist.is_main:
                record = self._finish(s)
            records.append(record)
        self.dist.barrier()
        return records + self.finished

    def _write_records(self, status: str) -> None:
        if self.dist.is_main:  # only rank 0 writes
            for s in self.students:
                s.book.write_record(self._record(s, status))

    def _stop_requested(self, batch: int) -> bool:
        wanted = stop.step_done()
        if not self.dist.enabled:
            return wanted
        if batch % STOP_SYNC_STEPS:
            return False
        flag = torch.tensor(int(stop.requested()), device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag)

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
        entry.update(s.objective.metrics())
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
