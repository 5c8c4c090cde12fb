"""Every flight runs on the pool: a flight handed to it may name, per job, a host to keep the job
off when another can take it (a retest of a job the lab broke there).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pool_flight") as batch:
        batch.add_column(sa.Column("avoid", sa.Text, nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("pool_flight") as batch:
        batch.drop_column("avoid")
