"""room units: when an occurrence's units were called, so that a restart or a move calls them again

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('booking_occurrences') as batch:
        batch.add_column(sa.Column('units_called_at', sa.DateTime(), nullable=True))
    # Until now the units were called when the room opened: those occurrences are done.
    op.execute("UPDATE booking_occurrences SET units_called_at = opened_at WHERE opened_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('booking_occurrences') as batch:
        batch.drop_column('units_called_at')
