"""A review run keeps when its patch set was made (the review system's time, when it says), for
the time from a patch set to labgate's result in ``labgate review discrepancies``.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_run") as batch:
        batch.add_column(sa.Column("patchset_created", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("review_run") as batch:
        batch.drop_column("patchset_created")
