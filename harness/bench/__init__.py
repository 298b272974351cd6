"""Benchmarks run from the command line (`loopchat bench ...`)."""
