"""Flights run by the pool of controllers sharing the store (``labgate host queue`` and
``labgate host worker``), and indexes for a job's host history and a flight's queued jobs.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pool_flight",
        sa.Column(
            "flight_id",
            sa.Integer,
            sa.ForeignKey("flight.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("submitted", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_host_event_job", "host_event", ["job_id"])
    op.create_index("ix_job_flight_outcome", "job", ["flight_id", "outcome"])


def downgrade() -> None:
    op.drop_index("ix_job_flight_outcome", "job")
    op.drop_index("ix_host_event_job", "host_event")
    op.drop_table("pool_flight")
