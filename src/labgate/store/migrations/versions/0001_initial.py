"""Initial schema: flights, revisions, jobs, runvars, steps, test cases, hosts, allocations.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "flight",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("branch", sa.String(200), nullable=False),
        sa.Column("blessing", sa.String(20), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(20)),
        sa.Column("created", TS, nullable=False),
        sa.Column("started", TS),
        sa.Column("finished", TS),
    )
    op.create_index("ix_flight_branch", "flight", ["branch", "id"])
    op.create_table(
        "flight_revision",
        sa.Column(
            "flight_id",
            sa.Integer,
            sa.ForeignKey("flight.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tree", sa.String(200), primary_key=True),
        sa.Column("sha", sa.String(64), nullable=False),
    )
    op.create_table(
        "job",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "flight_id", sa.Integer, sa.ForeignKey("flight.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("host", sa.String(200)),
        sa.Column("requires", sa.Text, nullable=False),
        sa.Column("depends", sa.Text, nullable=False),
        sa.Column("exclusive", sa.Boolean, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("started", TS),
        sa.Column("finished", TS),
        sa.UniqueConstraint("flight_id", "name", name="uq_job_flight_name"),
    )
    op.create_index("ix_job_name", "job", ["name", "flight_id"])
    op.create_table(
        "runvar",
        sa.Column(
            "job_id", sa.Integer, sa.ForeignKey("job.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "step",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "job_id", sa.Integer, sa.ForeignKey("job.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("timeout", sa.Float),
        sa.Column("results", sa.Text),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("exit_status", sa.Integer),
        sa.Column("duration_s", sa.Float),
        sa.Column("log", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("started", TS),
        sa.Column("finished", TS),
        sa.UniqueConstraint("job_id", "seq", name="uq_step_job_seq"),
    )
    op.create_table(
        "testcase",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "step_id", sa.Integer, sa.ForeignKey("step.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("duration_s", sa.Float),
        sa.Column("message", sa.Text),
    )
    op.create_index("ix_testcase_step", "testcase", ["step_id"])
    op.create_table(
        "host",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("flags", sa.Text, nullable=False),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("executor", sa.String(40), nullable=False),
    )
    op.create_table(
        "allocation",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "job_id", sa.Integer, sa.ForeignKey("job.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("started", TS, nullable=False),
        sa.Column("released", TS),
    )
    op.create_index("ix_allocation_host", "allocation", ["host", "released"])


def downgrade() -> None:
    for table in ("allocation", "host", "testcase", "step", "runvar", "job", "flight_revision"):
        op.drop_table(table)
    op.drop_table("flight")
