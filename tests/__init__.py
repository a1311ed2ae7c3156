"""Tests of obsbench (a package, so that ``tests.corpus_helpers`` is importable)."""
