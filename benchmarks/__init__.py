"""Benchmarks: ``aybiza bench`` runs the suites in :mod:`benchmarks.harness` against ``budgets.toml``."""
