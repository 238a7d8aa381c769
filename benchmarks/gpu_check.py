"""One prepared GPU session: speed benchmark, CUDA-graph sanity, and a real-data check.

    python benchmarks/gpu_check.py --out DIR [--data-root DIR] [--smoke]

1. the loss tests that need CUDA (graph capture and replay of every loss);
2. the CUDA-graph step against the eager step on the same run (accuracy and loss must agree);
3. ``python -m ckd_lib.bench --variants`` at full size (50,000 / 10,000 images, batch 64);
4. Fashion-MNIST (the real files): a resnet56 teacher trained for a few epochs, then CE, KD and CKD
   resnet20 students sharing it; accuracies and seconds per epoch.
Prints a short table for each and writes everything to DIR as JSON. `--smoke` runs tiny sizes on
the CPU, to check the script itself before spending device time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ckd_lib.config import RunConfig  # noqa: E402
from ckd_lib.engine import train  # noqa: E402


def section(title):
    print(f"\n=== {title} ({time.strftime('%H:%M:%S')})", flush=True)


def graph_vs_eager(device, out_dir, smoke):
    data = "synthetic:num_classes=10,num_train=2048,num_test=512" if not smoke else \
        "synthetic:num_classes=10,num_train=128,num_test=64"
    rows = {}
    for graphs in (False, True) if not smoke else (False,):
        cfg = RunConfig(student="resnet8", method="CKD", dataset=data, teacher="resnet20",
                        teacher_checkpoint="untrained", epochs=2, schedule="cosine", lr=0.05,
                        batch_size=64, device=device, amp="none", channels_last=False,
                        cuda_graphs=graphs, out_dir=str(out_dir / f"graphs-{graphs}"),
                        progress=False)
        (record,) = train(cfg)
        rows[f"cuda_graphs={graphs}"] = {
            "test_top1": [h["test_top1"] for h in record["history"]],
            "loss_ckd": [h["loss_ckd"] for h in record["history"]]}
    for name, row in rows.items():
        print(f"{name:20s} top1/epoch {row['test_top1']}  ckd loss/epoch "
              f"{[round(v, 5) for v in row['loss_ckd']]}")
    return rows


def fashion_mnist(device, data_root, out_dir, smoke):
    subset = {"train_subset": 512, "test_subset": 256} if smoke else {}
    epochs = 1 if smoke else 8
    common = dict(dataset="fashion_mnist", data_root=data_root, epochs=epochs, lr=0.05,
                  schedule="cosine", batch_size=64, device=device, out_dir=str(out_dir),
                  progress=False, **subset)
    (teacher,) = train(RunConfig(student="resnet56", method="CE", **common))
    checkpoint = str(out_dir / teacher["run_id"] / "model_last.pth")
    students = train([
        RunConfig(student="resnet20", method="KD", teacher="resnet56",
                  teacher_checkpoint=checkpoint, **common),
        RunConfig(student="resnet20", method="CKD", teacher="resnet56",
                  teacher_checkpoint=checkpoint, loss={"cl_weight": 10.0}, **common),
    ])
    (alone,) = train(RunConfig(student="resnet20", method="CE", **common))
    rows = []
    for record in (teacher, alone, *students):
        h = record["history"]
        steady = h[1:] if len(h) > 1 else h
        rows.append({"model": record["config"]["student"], "method": record["config"]["method"],
                     "best_top1": record["best"]["top1"], "last_top1": record["last"]["top1"],
                     "train_s_per_epoch": sum(e["train_seconds"] for e in steady) / len(steady),
                     "eval_s_per_epoch": sum(e["eval_seconds"] for e in steady) / len(steady),
                     "students_in_group": len(record["group"]), "speed": record["speed"]})
    print(f"{'model':10s} {'method':6s} {'best@1':>7s} {'last@1':>7s} {'train s/ep':>10s} "
          f"{'eval s/ep':>9s} group")
    for r in rows:
        print(f"{r['model']:10s} {r['method']:6s} {r['best_top1']:7.2f} {r['last_top1']:7.2f} "
              f"{r['train_s_per_epoch']:10.2f} {r['eval_s_per_epoch']:9.2f} "
              f"{r['students_in_group']}")
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--data-root", default=str(ROOT / ".gpu_data"))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if args.smoke else "cuda"
    work = Path("/tmp/ckd_gpu_check")
    summary = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
               "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
    print(summary, flush=True)

    if device == "cuda":
        section("loss tests that need CUDA")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests/test_losses.py", "-k", "cuda"], cwd=ROOT,
                              capture_output=True, text=True)
        print(proc.stdout[-1500:], proc.stderr[-1500:])
        summary["cuda_loss_tests_rc"] = proc.returncode

    section("CUDA graph step vs eager step (fp32)")
    try:
        summary["graph_vs_eager"] = graph_vs_eager(device, work / "gve", args.smoke)
    except Exception as error:  # keep going: the other checks still pay for the device time
        print(f"FAILED: {error!r}")
        summary["graph_vs_eager"] = repr(error)

    section("benchmark: reference loop vs fast path")
    bench_json = out / "bench.json"
    sizes = ["--train-size", "256", "--test-size", "128", "--epochs", "2"] if args.smoke else []
    proc = subprocess.run([sys.executable, "-m", "ckd_lib.bench", "--device", device,
                           "--variants", "--json", str(bench_json), *sizes], cwd=ROOT,
                          capture_output=True, text=True)
    print(proc.stdout, proc.stderr[-3000:])
    summary["bench_rc"] = proc.returncode

    section("Fashion-MNIST: teacher, then KD and CKD students sharing it, and CE alone")
    try:
        summary["fashion_mnist"] = fashion_mnist(device, args.data_root, work / "fmnist",
                                                 args.smoke)
    except Exception as error:
        print(f"FAILED: {error!r}")
        summary["fashion_mnist"] = repr(error)
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=1, default=str))
    print("\ndone", time.strftime("%H:%M:%S"))


if __name__ == "__main__":
    main()
