"""On-demand host time: each reservation an approved user made (host, from, until), so that
its hours count in their weekly host-hours quota while it runs and after it ended.

Revision ID: 0018
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_time",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_host_time_user", "host_time", ["user", "until"])


def downgrade() -> None:
    op.drop_index("ix_host_time_user", "host_time")
    op.drop_table("host_time")
