"""rooms spread over several nodes: each node's part, the tracks piped between nodes,
and commands for another node's participants

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('room_parts',
    sa.Column('room_name', sa.String(length=64), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('workers', sa.JSON(), nullable=False),
    sa.Column('participants', sa.JSON(), nullable=False),
    sa.Column('locked', sa.Boolean(), nullable=False),
    sa.Column('recording', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['media_nodes.id']),
    sa.PrimaryKeyConstraint('room_name', 'node_id')
    )
    op.create_table('room_pipes',
    sa.Column('room_name', sa.String(length=64), nullable=False),
    sa.Column('to_pipe', sa.String(length=80), nullable=False),
    sa.Column('producer_id', sa.String(length=80), nullable=False),
    sa.Column('from_node_id', sa.Integer(), nullable=False),
    sa.Column('origin', sa.String(length=80), nullable=False),
    sa.Column('owner_id', sa.String(length=80), nullable=False),
    sa.Column('producer', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['from_node_id'], ['media_nodes.id']),
    sa.PrimaryKeyConstraint('room_name', 'to_pipe', 'producer_id')
    )
    op.create_table('room_commands',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('room_name', sa.String(length=64), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('command', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['media_nodes.id']),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_room_commands_node_id', 'room_commands', ['node_id'])


def downgrade() -> None:
    op.drop_index('ix_room_commands_node_id', table_name='room_commands')
    op.drop_table('room_commands')
    op.drop_table('room_pipes')
    op.drop_table('room_parts')
