"""The `loopchat` command: the CLI and the `loopchat run` wiring, above every floor.

It imports the service, the trainer and the harness; nothing imports it.

cli.py: `main` and `build_parser`; commands/: one module per command group (its flags beside
its `cmd_*`; commands/run.py is `loopchat run`); common.py: what the commands share.
"""
