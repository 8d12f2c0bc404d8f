"""capacity day versions: a trigger changes them when scheduled occurrences change

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

from scheduler.booking.day_versions import create_triggers

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('capacity_days', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.BigInteger(), server_default='0',
                                      nullable=False))
    create_triggers(op.get_bind())


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        op.execute('DROP TRIGGER booking_occurrences_capacity_days ON booking_occurrences')
        op.execute('DROP FUNCTION capacity_days_touched()')
    else:
        for event in ('insert', 'delete', 'update'):
            op.execute(f'DROP TRIGGER booking_occurrences_capacity_days_{event}')
    with op.batch_alter_table('capacity_days', schema=None) as batch_op:
        batch_op.drop_column('version')
