"""Benchmarks of the pipeline against its limits (`make bench`)."""
