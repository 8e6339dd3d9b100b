"""several workers on one database: leases (who runs each local camera, who evaluates the alert rules,
which workers are alive), each job's owner, each camera's latest state, and alerts announced once

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-12 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_ts", sa.Double(), nullable=False),
        sa.Column("acquired_ts", sa.Double(), nullable=False),
        sa.Column("renewed_ts", sa.Double(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "camera_status",
        sa.Column("camera", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("since_ts", sa.Double(), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("camera"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=128), nullable=True))
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("announced", sa.String(length=16), nullable=True))
    op.execute("UPDATE alerts SET announced = state")  # announced by the version that stored them


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("announced")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("owner")
    op.drop_table("camera_status")
    op.drop_table("leases")
