"""covering indexes for the compliance query (stats buckets and rollups read from the index alone)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10 09:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SERIES_COLUMNS = ["camera", "n_people", "compliant_people", "frames_analysed", "present_max"]


def upgrade() -> None:
    # the new indexes lead with the columns of the old ones, which they replace (retention uses them too)
    op.create_index("ix_stats_buckets_series", "stats_buckets", ["start_ts", *SERIES_COLUMNS])
    op.drop_index("ix_stats_buckets_start_ts", table_name="stats_buckets")
    op.create_index("ix_rollup_series", "stats_rollups", ["grain", "start_ts", *SERIES_COLUMNS])
    op.drop_index("ix_rollup_grain_start", table_name="stats_rollups")


def downgrade() -> None:
    op.create_index("ix_rollup_grain_start", "stats_rollups", ["grain", "start_ts"])
    op.drop_index("ix_rollup_series", table_name="stats_rollups")
    op.create_index("ix_stats_buckets_start_ts", "stats_buckets", ["start_ts"])
    op.drop_index("ix_stats_buckets_series", table_name="stats_buckets")
