"""loopchat's shared floor: what the service and the trainer both stand on.

The database (models, session, migrations, the queries both sides ask), the domain
types, the artifact files and the typed records that cross between the two. Nothing
here imports `service`, `trainer`, the CLI or the harness.
"""
