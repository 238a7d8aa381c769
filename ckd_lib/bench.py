"""Benchmark: the mdistiller-style reference loop against ckd_lib's fast path, in one process.

    python -m ckd_lib.bench                      # full size on CUDA (50,000 train / 10,000 test)
    python -m ckd_lib.bench --train-size 2048 --test-size 512 --epochs 2   # small, CPU

Both paths train resnet32x4 → resnet8x4 with CKD at batch 64 on CIFAR-100-sized data (synthetic
images of 100 classes unless --dataset names real data) and report seconds per epoch for training
and evaluation, images per second, peak memory and the speed-up; then 1 against 3 students sharing
one teacher. The reference loop is written here on purpose, independently of the engine: a
torchvision DataLoader with PIL transforms and 2 workers, fp32, eager, torch.optim.SGD, a host
sync per step for the logged loss (as mdistiller's meters do).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ckd_lib.config import RunConfig
from ckd_lib.data import load_dataset, make_loader
from ckd_lib.engine.trainer import GroupTrainer
from ckd_lib.losses import ckd_loss
from ckd_lib.models import create_model
from ckd_lib.results import atomic_write_json, environment


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def reference_loop(dataset: str, device: torch.device, epochs: int, batch_size: int,
                   cl_weight: float = 100.0, workers: int = 2) -> dict:
    """The authors' style of loop, for comparison only."""
    train_set = load_dataset(dataset, "train")
    test_set = load_dataset(dataset, "test")
    train_loader = make_loader("torch", train_set, batch_size, train=True, seed=0,
                               num_workers=workers)
    test_loader = make_loader("torch", test_set, 64, train=False, seed=0, num_workers=1)
    torch.manual_seed(0)
    teacher = create_model("resnet32x4", num_classes=train_set.num_classes).to(device).eval()
    student = create_model("resnet8x4", num_classes=train_set.num_classes).to(device)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    train_times, eval_times = [], []
    _reset_peak(device)
    for epoch in range(epochs):
        train_loader.set_epoch(epoch)
        student.train()
        _sync(device)
        t0 = time.perf_counter()
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                logits_t = teacher(x)
            logits_s = student(x)
            loss = F.cross_entropy(logits_s, y) + cl_weight * ckd_loss(logits_s, logits_t)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # the per-step meter update of the reference loop
        _sync(device)
        train_times.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        student.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += (student(x.to(device)).argmax(1).cpu() == y).sum().item()
        eval_times.append(time.perf_counter() - t1)
    return {"train_s_per_epoch": statistics.median(train_times),
            "eval_s_per_epoch": statistics.median(eval_times),
            "images_per_s": len(train_set.labels) / statistics.median(train_times),
            "peak_memory_mb": _peak_memory_mb(device)}


def fast_path(dataset: str, device: torch.device, epochs: int, batch_size: int,
              students: int = 1, **speed) -> dict:
    """ckd_lib's engine on the same pair; epoch 1 (capture, warm-up) is excluded if epochs > 1."""
    with tempfile.TemporaryDirectory() as out_dir:
        configs = [RunConfig(student="resnet8x4", method="CKD", dataset=dataset,
                             teacher="resnet32x4", teacher_checkpoint="untrained",
                             loss={"cl_weight": 100.0}, epochs=epochs, lr=0.05,
                             schedule="cosine", batch_size=batch_size, seed=0, init_seed=i,
                             device=str(device), out_dir=out_dir, progress=False, **speed)
                   for i in range(students)]
        trainer = GroupTrainer([c.validate() for c in configs])
        trainer.log = lambda line: None
        _reset_peak(device)
        records = trainer.run()
    history = records[0]["history"]
    steady = history[1:] if len(history) > 1 else history
    train_s = statistics.median(h["train_seconds"] for h in steady)
    eval_s = statistics.median(sum(r["history"][i]["eval_seconds"] for r in records)
                               for i in range(len(history) - len(steady), len(history)))
    return {"train_s_per_epoch": train_s, "eval_s_per_epoch": eval_s,
            "images_per_s": history[0]["train_images"] / train_s,
            "peak_memory_mb": _peak_memory_mb(device), "speed": records[0]["speed"],
            "students": students}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ckd_lib.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dataset", default=None,
                        help="dataset name (default: synthetic, 100 classes, the given sizes)")
    parser.add_argument("--train-size", type=int, default=50000)
    parser.add_argument("--test-size", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="fast-path epochs (first excluded)")
    parser.add_argument("--ref-epochs", type=int, default=1, help="reference-loop epochs")
    parser.add_argument("--variants", action="store_true",
                        help="also time fp32 eager and graphs without bf16 (to choose defaults)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dataset = args.dataset or (f"synthetic:num_classes=100,num_train={args.train_size},"
                               f"num_test={args.test_size}")
    rows = {"reference (DataLoader, fp32, eager)": reference_loop(
        dataset, device, args.ref_epochs, args.batch_size)}
    if args.variants:
        rows["resident data, fp32, eager"] = fast_path(dataset, device, args.epochs,
                                                       args.batch_size, cuda_graphs=False,
                                                       amp="none", channels_last=False)
        if device.type == "cuda":
            rows["resident, CUDA graph, fp32"] = fast_path(dataset, device, args.epochs,
                                                           args.batch_size, amp="none",
                                                           channels_last=False)
    rows["fast path (defaults)"] = fast_path(dataset, device, args.epochs, args.batch_size)
    rows["fast path, 3 students"] = fast_path(dataset, device, args.epochs, args.batch_size,
                                              students=3)
    ref = rows["reference (DataLoader, fp32, eager)"]
    ref_total = ref["train_s_per_epoch"] + ref["eval_s_per_epoch"]
    one = rows["fast path (defaults)"]
    print(f"device: {environment(device)['device_name']}; data: {dataset}; batch "
          f"{args.batch_size}; resnet32x4 -> resnet8x4 CKD")
    print(f"{'path':40s} {'train s/ep':>10s} {'eval s/ep':>9s} {'img/s':>9s} "
          f"{'peak MiB':>9s} {'speed-up':>8s}")
    for name, r in rows.items():
        total = r["train_s_per_epoch"] + r["eval_s_per_epoch"]
        memory = f"{r['peak_memory_mb']:.0f}" if r["peak_memory_mb"] is not None else "-"
        print(f"{name:40s} {r['train_s_per_epoch']:10.3f} {r['eval_s_per_epoch']:9.3f} "
              f"{r['images_per_s']:9.0f} {memory:>9s} {ref_total / total:7.2f}x")
    three = rows["fast path, 3 students"]
    ratio = ((three["train_s_per_epoch"] + three["eval_s_per_epoch"])
             / (one["train_s_per_epoch"] + one["eval_s_per_epoch"]))
    print(f"3 students sharing the teacher cost {ratio:.2f}x the time of one")
    if args.json:
        atomic_write_json(Path(args.json), {
            "date": time.strftime("%Y-%m-%d"), "environment": environment(device),
            "dataset": dataset, "batch_size": args.batch_size, "rows": rows,
            "three_students_ratio": ratio})
        print(json.dumps({"written": args.json}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
