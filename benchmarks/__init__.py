"""Benchmarks: figures with ratios against a named baseline measured in the same run."""
