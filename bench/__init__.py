"""The scale benchmark: ``python -m bench --students N`` (see README, "Benchmark")."""
