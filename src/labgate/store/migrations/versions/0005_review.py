"""Code review: the durable queue of review runs (one per connector, change, patch set and
attempt), webhook deliveries already seen, and the votes of other CI accounts.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "review_run",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("connector", sa.String(200), nullable=False),
        sa.Column("change", sa.String(200), nullable=False),
        sa.Column("patchset", sa.String(200), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("project", sa.String(300), nullable=False),
        sa.Column("ref", sa.String(300), nullable=False),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("owner", sa.String(200)),
        sa.Column("lease_until", TS),
        sa.Column("flight_id", sa.Integer, sa.ForeignKey("flight.id")),
        sa.Column("vote", sa.Integer),
        sa.Column("voting", sa.Boolean),
        sa.Column("message", sa.Text),
        sa.Column("vote_state", sa.String(20)),
        sa.Column("retest", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("reason", sa.Text),
        sa.Column("created", TS, nullable=False),
        sa.Column("updated", TS, nullable=False),
        sa.UniqueConstraint("connector", "change", "patchset", "attempt", name="uq_review_run"),
    )
    op.create_index("ix_review_run_state", "review_run", ["state", "id"])
    op.create_index("ix_review_run_revision", "review_run", ["connector", "revision"])
    op.create_table(
        "review_delivery",
        sa.Column("connector", sa.String(200), primary_key=True),
        sa.Column("delivery", sa.String(200), primary_key=True),
        sa.Column("event", sa.String(100), nullable=False),
        sa.Column("received", TS, nullable=False),
    )
    op.create_table(
        "review_vote",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("connector", sa.String(200), nullable=False),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("change", sa.String(200), nullable=False),
        sa.Column("patchset", sa.String(200), nullable=False),
        sa.Column("account", sa.String(300), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("value", sa.Integer, nullable=False),
        sa.Column("created", TS, nullable=False),
        sa.UniqueConstraint("connector", "revision", "account", "label", name="uq_review_vote"),
    )


def downgrade() -> None:
    for table in ("review_vote", "review_delivery", "review_run"):
        op.drop_table(table)
