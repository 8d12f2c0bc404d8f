"""room units: the PIN a unit keys in after dialling a meeting's or a bridge's number

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""
import secrets

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

TABLES = ('bookings', 'standing_bridges')


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('dial_in_pin', sa.String(length=12), nullable=False,
                                       server_default=''))
    # Every existing meeting and bridge gets a PIN of its own (six random digits).
    connection = op.get_bind()
    for table in TABLES:
        rows = sa.table(table, sa.column('id', sa.Integer), sa.column('dial_in_pin', sa.String))
        for (row_id,) in connection.execute(sa.select(rows.c.id)).all():
            connection.execute(rows.update().where(rows.c.id == row_id).values(
                dial_in_pin=str(secrets.randbelow(10**6)).zfill(6)))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column('dial_in_pin')
