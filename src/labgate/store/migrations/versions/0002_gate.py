"""The push gate: baselines per branch, pushes, stored verdicts, bisections.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "branch_state",
        sa.Column("branch", sa.String(200), primary_key=True),
        sa.Column("baseline_flight_id", sa.Integer, sa.ForeignKey("flight.id")),
        sa.Column("gate_owner", sa.String(200)),
        sa.Column("gate_lease_until", TS),
        sa.Column("updated", TS, nullable=False),
    )
    op.create_table(
        "push",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("branch", sa.String(200), nullable=False),
        sa.Column("flight_id", sa.Integer, sa.ForeignKey("flight.id"), nullable=False),
        sa.Column("tree", sa.String(200), nullable=False),
        sa.Column("sha", sa.String(64), nullable=False),
        sa.Column("previous_sha", sa.String(64)),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("message", sa.Text),
        sa.Column("created", TS, nullable=False),
    )
    op.create_index("ix_push_branch", "push", ["branch", "id"])
    op.create_table(
        "verdict",
        sa.Column(
            "flight_id",
            sa.Integer,
            sa.ForeignKey("flight.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("baseline_flight_id", sa.Integer),
        sa.Column("push_allowed", sa.Boolean, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created", TS, nullable=False),
    )
    op.create_table(
        "bisection",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("branch", sa.String(200), nullable=False),
        sa.Column("job", sa.String(300), nullable=False),
        sa.Column("step", sa.String(300)),
        sa.Column("testcase", sa.Text),
        sa.Column("flight_id", sa.Integer, sa.ForeignKey("flight.id"), nullable=False),
        sa.Column("baseline_flight_id", sa.Integer, sa.ForeignKey("flight.id")),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("culprit_tree", sa.String(200)),
        sa.Column("culprit_commit", sa.String(64)),
        sa.Column("confidence", sa.Float),
        sa.Column("executions", sa.Integer, nullable=False),
        sa.Column("rounds", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("flights", sa.Text, nullable=False),
        sa.Column("graph", sa.Text, nullable=False),
        sa.Column("created", TS, nullable=False),
        sa.Column("finished", TS),
    )
    op.create_index("ix_bisection_branch", "bisection", ["branch", "id"])


def downgrade() -> None:
    for table in ("bisection", "verdict", "push", "branch_state"):
        op.drop_table(table)
