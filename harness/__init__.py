"""Drives the product from outside: benchmarks, synthetic votes and simulated users.

It stands above the service and the trainer (over HTTP, the store and their public
functions) and is never imported by them.
"""
