"""admin web: sign-in lockout, audit log, grant rollout

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('action', sa.String(length=60), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_action'), ['action'])
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'])

    op.create_table('grant_programmes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('budget_czk', sa.Integer(), nullable=False),
    sa.Column('call_opens', sa.Date(), nullable=False),
    sa.Column('call_closes', sa.Date(), nullable=False),
    sa.Column('deadline', sa.Date(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('endpoints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('serial', sa.String(length=100), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('site', sa.String(length=300), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('programme_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('price_czk', sa.Integer(), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=True),
    sa.Column('status_changed_at', sa.DateTime(), nullable=False),
    sa.Column('last_selftest_id', sa.Integer(), nullable=True),
    sa.Column('last_selftest_at', sa.DateTime(), nullable=True),
    sa.Column('last_selftest_passed', sa.Boolean(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], ),
    sa.ForeignKeyConstraint(['programme_id'], ['grant_programmes.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('serial')
    )
    with op.batch_alter_table('endpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_endpoints_organisation_id'), ['organisation_id'])
        batch_op.create_index(batch_op.f('ix_endpoints_programme_id'), ['programme_id'])
        batch_op.create_index(batch_op.f('ix_endpoints_status'), ['status'])

    op.create_table('grant_applications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('programme_id', sa.Integer(), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('submitted_on', sa.Date(), nullable=False),
    sa.Column('units_requested', sa.Integer(), nullable=False),
    sa.Column('amount_czk', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('approved_czk', sa.Integer(), nullable=False),
    sa.Column('decided_on', sa.Date(), nullable=True),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], ),
    sa.ForeignKeyConstraint(['programme_id'], ['grant_programmes.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('grant_applications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_grant_applications_organisation_id'), ['organisation_id'])
        batch_op.create_index(batch_op.f('ix_grant_applications_programme_id'), ['programme_id'])

    op.create_table('sign_in_failures',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('user_id')
    )


def downgrade() -> None:
    op.drop_table('sign_in_failures')
    with op.batch_alter_table('grant_applications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_grant_applications_programme_id'))
        batch_op.drop_index(batch_op.f('ix_grant_applications_organisation_id'))

    op.drop_table('grant_applications')
    with op.batch_alter_table('endpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_endpoints_status'))
        batch_op.drop_index(batch_op.f('ix_endpoints_programme_id'))
        batch_op.drop_index(batch_op.f('ix_endpoints_organisation_id'))

    op.drop_table('endpoints')
    op.drop_table('grant_programmes')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))
        batch_op.drop_index(batch_op.f('ix_audit_log_action'))

    op.drop_table('audit_log')
