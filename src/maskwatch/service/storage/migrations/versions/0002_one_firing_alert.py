"""one firing alert per rule and camera (several control-room workers fire each alert once)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-10 08:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

FIRING = sa.text("state = 'firing'")


def upgrade() -> None:
    # duplicates left by workers of an older version: keep the first, resolve the others
    op.execute(
        "UPDATE alerts SET state = 'resolved', resolved_ts = started_ts WHERE state = 'firing' AND id NOT IN "
        "(SELECT MIN(id) FROM alerts WHERE state = 'firing' GROUP BY rule_id, camera)"
    )
    op.create_index(
        "ux_alerts_firing",
        "alerts",
        ["rule_id", "camera"],
        unique=True,
        postgresql_where=FIRING,
        sqlite_where=FIRING,
    )


def downgrade() -> None:
    op.drop_index("ux_alerts_firing", table_name="alerts")
