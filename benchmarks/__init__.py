"""Benchmark scripts and their recorded results (``RESULTS.md``).

A regular package so that ``benchmarks/device_check.py``, run as a script from a copy of the
repository without installing anything, imports its sections (``benchmarks.checks``) from here
and not from some other ``benchmarks`` module an environment may have installed.
"""
