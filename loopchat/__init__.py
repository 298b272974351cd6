"""The `loopchat` command: the CLI and the `loopchat run` wiring, above every floor.

It imports the service, the trainer and the harness; nothing imports it.
"""
