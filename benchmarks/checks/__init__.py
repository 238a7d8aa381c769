"""The sections of ``benchmarks/device_check.py``, one module each, and what they share.

Each section module has ``run(recorder, options)``; it runs in its own process (a crash, a hang
or a CUDA error in one section cannot take the others with it) and records each figure as soon as
it is measured (:mod:`benchmarks.checks.recording`).
"""
