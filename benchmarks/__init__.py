"""Benchmark scripts: run them as files (``python benchmarks/suite.py``); the library never imports them."""
