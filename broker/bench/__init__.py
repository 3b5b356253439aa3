"""Benchmarks (`broker bench ...`): shells that time the core; never imported by the broker."""
