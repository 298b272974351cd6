"""policy events: swaps, promotions, rollbacks, retirements, failed loads

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("previous_version_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["policy_versions.id"],
            name=op.f("fk_policy_events_version_id_policy_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["previous_version_id"],
            ["policy_versions.id"],
            name=op.f("fk_policy_events_previous_version_id_policy_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_events")),
    )
    with op.batch_alter_table("policy_events") as b:
        b.create_index(b.f("ix_policy_events_kind"), ["kind"], unique=False)
        b.create_index(b.f("ix_policy_events_version_id"), ["version_id"], unique=False)
        b.create_index(b.f("ix_policy_events_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_table("policy_events")
