"""camera columns hold a remote camera's full name: ``node:camera`` is up to 129 characters
(``maskwatch.core.names.MAX_QUALIFIED_NAME``); at 64, PostgreSQL refused the insert of a valid longer one

On PostgreSQL widening a varchar is a catalogue change (no rewrite). SQLite does not enforce lengths; its
tables are copied once (batch mode) so that the declared types agree with the models.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-14 09:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

QUALIFIED = 129  # maskwatch.core.names.MAX_QUALIFIED_NAME when this was written
COLUMNS = [  # (table, column, nullable)
    ("events", "camera", False),
    ("stats_buckets", "camera", False),
    ("stats_rollups", "camera", False),
    ("alert_rules", "camera", True),
    ("alerts", "camera", False),
    ("camera_status", "camera", False),  # 0006: each camera's latest state (remote cameras' too)
]


def _alter(length_from: int, length_to: int) -> None:
    for table, column, nullable in COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column,
                existing_type=sa.String(length=length_from),
                type_=sa.String(length=length_to),
                existing_nullable=nullable,
            )


def upgrade() -> None:
    _alter(64, QUALIFIED)


def downgrade() -> None:
    _alter(QUALIFIED, 64)
