"""room units: the units a booking calls into its room when an occurrence starts

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'booking_units',
        sa.Column('booking_id', sa.Integer(), sa.ForeignKey('bookings.id'), primary_key=True),
        sa.Column('endpoint_id', sa.Integer(), sa.ForeignKey('endpoints.id'), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table('booking_units')
