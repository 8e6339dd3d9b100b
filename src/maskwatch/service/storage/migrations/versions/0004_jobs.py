"""jobs: batch jobs kept across restarts (state, progress, summary, where their events are)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_ts", sa.Double(), nullable=False),
        sa.Column("started_ts", sa.Double(), nullable=True),
        sa.Column("finished_ts", sa.Double(), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("expected_frames", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("n_events", sa.Integer(), nullable=False),
        sa.Column("events_file", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_created_ts", "jobs", ["created_ts"])


def downgrade() -> None:
    op.drop_index("ix_jobs_created_ts", table_name="jobs")
    op.drop_index("ix_jobs_state", table_name="jobs")
    op.drop_table("jobs")
