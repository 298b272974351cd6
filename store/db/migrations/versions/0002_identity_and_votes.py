"""api keys; indexes for vote exports

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    with op.batch_alter_table("api_keys") as b:
        b.create_index(b.f("ix_api_keys_user_id"), ["user_id"], unique=False)
    with op.batch_alter_table("ratings") as b:
        b.create_index(b.f("ix_ratings_created_at"), ["created_at"], unique=False)
    with op.batch_alter_table("comparisons") as b:
        b.create_index(b.f("ix_comparisons_voted_at"), ["voted_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("comparisons") as b:
        b.drop_index(b.f("ix_comparisons_voted_at"))
    with op.batch_alter_table("ratings") as b:
        b.drop_index(b.f("ix_ratings_created_at"))
    with op.batch_alter_table("api_keys") as b:
        b.drop_index(b.f("ix_api_keys_user_id"))
    op.drop_table("api_keys")
