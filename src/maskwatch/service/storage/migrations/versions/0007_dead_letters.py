"""dead letters: messages the control room could not store, kept with the reason (never acknowledged into
nothing)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-14 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("topic", sa.Text(), nullable=True),
        sa.Column("node", sa.String(length=64), nullable=True),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_ts", sa.Double(), nullable=False),
        sa.Column("last_ts", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("digest"),
    )
    op.create_index("ix_dead_letters_reason", "dead_letters", ["reason"])
    op.create_index("ix_dead_letters_last_ts", "dead_letters", ["last_ts"])


def downgrade() -> None:
    op.drop_index("ix_dead_letters_last_ts", table_name="dead_letters")
    op.drop_index("ix_dead_letters_reason", table_name="dead_letters")
    op.drop_table("dead_letters")
