"""The dashboard: cancel requests, and indexes for its pages (a host's jobs, a flight's pushes and
bisections, the steps of a job by name over flights).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cancel_request",
        sa.Column(
            "flight_id",
            sa.Integer,
            sa.ForeignKey("flight.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("requested", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
    )
    op.create_index("ix_job_host", "job", ["host", "id"])
    op.create_index("ix_push_flight", "push", ["flight_id"])
    op.create_index("ix_bisection_flight", "bisection", ["flight_id"])
    op.create_index("ix_flight_blessing", "flight", ["blessing", "id"])
    op.create_index("ix_flight_outcome", "flight", ["outcome", "id"])


def downgrade() -> None:
    for name, table in (
        ("ix_flight_outcome", "flight"),
        ("ix_flight_blessing", "flight"),
        ("ix_bisection_flight", "bisection"),
        ("ix_push_flight", "push"),
        ("ix_job_host", "job"),
    ):
        op.drop_index(name, table_name=table)
    op.drop_table("cancel_request")
