"""media nodes: labels, addresses, a lease and a death; the rooms the reaper moved

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases (nullable, or with a default): no table rebuild,
    # so the pool-version triggers on media_nodes stay as they are.
    op.add_column('media_nodes', sa.Column('labels', sa.JSON(), server_default='[]',
                                           nullable=False))
    op.add_column('media_nodes', sa.Column('addresses', sa.JSON(), server_default='[]',
                                           nullable=False))
    op.add_column('media_nodes', sa.Column('lease_expires_at', sa.DateTime(), nullable=True))
    op.add_column('media_nodes', sa.Column('dead_at', sa.DateTime(), nullable=True))
    op.create_table('room_moves',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('room_name', sa.String(length=64), nullable=False),
    sa.Column('from_node_id', sa.Integer(), nullable=False),
    sa.Column('from_worker_id', sa.Integer(), nullable=True),
    sa.Column('to_worker_id', sa.Integer(), nullable=False),
    sa.Column('moved_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['from_node_id'], ['media_nodes.id']),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_room_moves_node_moved', 'room_moves', ['from_node_id', 'moved_at'])


def downgrade() -> None:
    op.drop_index('ix_room_moves_node_moved', table_name='room_moves')
    op.drop_table('room_moves')
    # SQLite rebuilds the table to drop columns, which drops its triggers: made again.
    with op.batch_alter_table('media_nodes', schema=None) as batch_op:
        batch_op.drop_column('dead_at')
        batch_op.drop_column('lease_expires_at')
        batch_op.drop_column('addresses')
        batch_op.drop_column('labels')
    from scheduler.booking.pool_version import create_triggers
    create_triggers(op.get_bind())
