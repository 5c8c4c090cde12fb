"""Real hosts: each host's state (quarantine, reservation, broken streak), its history, slot
leases shared by every controller, and an index for finding queued jobs.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "host_status",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("quarantined", sa.Text),
        sa.Column("quarantined_at", TS),
        sa.Column("broken_streak", sa.Integer, nullable=False),
        sa.Column("reserved_by", sa.String(200)),
        sa.Column("reserved_reason", sa.Text),
        sa.Column("reserved_until", TS),
        sa.Column("updated", TS, nullable=False),
    )
    op.create_table(
        "host_event",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("created", TS, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("job_id", sa.Integer),
        sa.Column("attempt", sa.Integer),
        sa.Column("outcome", sa.String(20)),
        sa.Column("reason", sa.Text),
        sa.Column("data", sa.Text),
    )
    op.create_index("ix_host_event_host", "host_event", ["host", "id"])
    op.create_table(
        "slot_lease",
        sa.Column("host", sa.String(200), primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer),
        sa.Column("owner", sa.String(200)),
        sa.Column("lease_until", TS),
    )
    op.create_index("ix_slot_lease_owner", "slot_lease", ["owner"])
    op.create_index("ix_slot_lease_job", "slot_lease", ["job_id"])
    op.create_index("ix_job_outcome", "job", ["outcome", "id"])


def downgrade() -> None:
    op.drop_index("ix_job_outcome", "job")
    for table in ("slot_lease", "host_event", "host_status"):
        op.drop_table(table)
