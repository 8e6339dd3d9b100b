"""privacy_zones: each camera's privacy zones (polygons blacked out before a frame is analysed or shown)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-14 09:00:00

Named 0008 so that it sorts after the revisions other branches of this round add; the lead renumbers
``down_revision`` at merge.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: the camera inherits engine.camera_defaults.privacy_zones; a list (maybe empty): its own zones
    with op.batch_alter_table("cameras") as batch:
        batch.add_column(sa.Column("privacy_zones", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cameras") as batch:
        batch.drop_column("privacy_zones")
