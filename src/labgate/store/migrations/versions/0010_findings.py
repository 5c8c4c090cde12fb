"""Static analysis: a step's SARIF findings per flight, their triage (by identity, across
revisions) and the commit blamed for each new one.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "finding",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "flight_id", sa.Integer, sa.ForeignKey("flight.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "step_id", sa.Integer, sa.ForeignKey("step.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("job", sa.String(300), nullable=False),
        sa.Column("step", sa.String(300), nullable=False),
        sa.Column("tool", sa.String(200), nullable=False),
        sa.Column("rule", sa.String(300), nullable=False),
        sa.Column("level", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("line", sa.Integer),
        sa.Column("col", sa.Integer),
        sa.Column("function", sa.Text, nullable=False),
        sa.Column("identity", sa.String(64), nullable=False),
        sa.Column("snippet_key", sa.String(64), nullable=False),
    )
    op.create_index("ix_finding_flight", "finding", ["flight_id", "job", "step"])
    op.create_index("ix_finding_step", "finding", ["step_id"])
    op.create_index("ix_finding_identity", "finding", ["identity"])
    op.create_table(
        "finding_triage",
        sa.Column("identity", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(40), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("by", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "finding_blame",
        sa.Column(
            "flight_id",
            sa.Integer,
            sa.ForeignKey("flight.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("identity", sa.String(64), primary_key=True),
        sa.Column("tree", sa.String(200), nullable=False),
        sa.Column("commit", sa.String(64), nullable=False),
        sa.Column("author", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("flights", sa.Text, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("finding_blame")
    op.drop_table("finding_triage")
    op.drop_index("ix_finding_identity", "finding")
    op.drop_index("ix_finding_step", "finding")
    op.drop_index("ix_finding_flight", "finding")
    op.drop_table("finding")
