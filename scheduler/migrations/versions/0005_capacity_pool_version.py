"""capacity pool version: triggers change it when the pool, a share or the organisations change

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""
from alembic import op

from scheduler.booking.pool_version import create_triggers, drop_triggers

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_triggers(op.get_bind())


def downgrade() -> None:
    drop_triggers(op.get_bind())
