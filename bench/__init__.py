"""Benchmarks behind `make bench` (issue 6): real processes against a real broker."""
