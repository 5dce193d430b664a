"""Benchmarks: run by hand (`python -m tests.bench.throughput`), not collected by pytest."""
