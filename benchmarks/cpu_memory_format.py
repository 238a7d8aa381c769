"""Forward and backward time of the CIFAR-zoo models on the CPU, NCHW against channels_last.

Why the engine's ``channels_last: auto`` means channels_last on the CPU too: run this on the
machine in question (idle), e.g. ``python benchmarks/cpu_memory_format.py resnet8 MobileNetV2``.
Prints one line per model: median milliseconds of a training forward + backward (batch 64,
32x32 inputs, 10 classes) and of an inference forward, in each memory format.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ckd_lib.models import create_model


def _median_ms(step, repeats: int, warmup: int = 5) -> float:
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(name: str, memory_format, batch: int, repeats: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).to(memory_format=memory_format)
    images = torch.randn(batch, 3, 32, 32).to(memory_format=memory_format)
    labels = torch.randint(0, 10, (batch,))

    def train_step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()

    def eval_step():
        with torch.inference_mode():
            model(images)

    return _median_ms(train_step, repeats), _median_ms(eval_step, repeats)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["resnet8", "resnet20", "MobileNetV2"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print(f"{'model':<14}{'train NCHW':>12}{'train NHWC':>12}{'eval NCHW':>11}{'eval NHWC':>11}")
    for name in args.models:
        nchw = measure(name, torch.contiguous_format, args.batch_size, args.repeats)
        nhwc = measure(name, torch.channels_last, args.batch_size, args.repeats)
        print(f"{name:<14}{nchw[0]:>10.1f}ms{nhwc[0]:>10.1f}ms{nchw[1]:>9.1f}ms{nhwc[1]:>9.1f}ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
