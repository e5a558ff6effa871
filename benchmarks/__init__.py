"""Benchmarks: ``python -m benchmarks [--quick] [area ...]`` (or ``tox -e bench``)."""
