"""usage: the days rolled up, those with no usage too, so that quiet days are not redone every night

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_days_rolled_up", sa.Column("day", sa.Date(), nullable=False), sa.PrimaryKeyConstraint("day")
    )
    # The days with usage rows are done; a quiet day among them is done once more.
    op.execute("INSERT INTO usage_days_rolled_up (day) SELECT DISTINCT day FROM usage_daily")


def downgrade() -> None:
    op.drop_table("usage_days_rolled_up")
