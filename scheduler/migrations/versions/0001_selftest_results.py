"""self-test results

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "selftest_results",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("endpoint_serial", sa.String(100), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("user_agent", sa.Text(), nullable=False),
    )
    op.create_index("ix_selftest_results_endpoint_serial", "selftest_results", ["endpoint_serial"])


def downgrade() -> None:
    op.drop_index("ix_selftest_results_endpoint_serial", table_name="selftest_results")
    op.drop_table("selftest_results")
