"""booking occurrences: the series occurrence a moved one stands for

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable) on both databases: no table rebuild, so the day-version
    # triggers on booking_occurrences stay as they are.
    op.add_column('booking_occurrences', sa.Column('instance_local', sa.DateTime(),
                                                   nullable=True))


def downgrade() -> None:
    # SQLite rebuilds the table to drop a column, which drops its triggers: made again.
    with op.batch_alter_table('booking_occurrences', schema=None) as batch_op:
        batch_op.drop_column('instance_local')
    if op.get_bind().dialect.name == 'sqlite':
        from scheduler.booking.day_versions import create_triggers
        create_triggers(op.get_bind())
