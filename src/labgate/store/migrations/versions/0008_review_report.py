"""A review run keeps what its connector said testing began with (a Review Board status
update's id), so the result updates that one, whatever restarts came between.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_run") as batch:
        batch.add_column(sa.Column("report_id", sa.String(200)))


def downgrade() -> None:
    with op.batch_alter_table("review_run") as batch:
        batch.drop_column("report_id")
