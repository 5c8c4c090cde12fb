"""A verdict keeps how many regressions stop its push (the gate's blocking items and blocking
slowdowns), so the flight list says "regressed" without reading every verdict's JSON.

Revision ID: 0016
Revises: 0013
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("verdict") as batch:
        batch.add_column(sa.Column("regressions", sa.Integer()))
    verdict = sa.table(
        "verdict",
        sa.column("flight_id", sa.Integer()),
        sa.column("data", sa.Text()),
        sa.column("regressions", sa.Integer()),
    )
    conn = op.get_bind()
    # one verdict at a time: a big lab's verdicts are megabytes each
    for flight_id in conn.execute(sa.select(verdict.c.flight_id)).scalars().all():
        text = conn.execute(
            sa.select(verdict.c.data).where(verdict.c.flight_id == flight_id)
        ).scalar_one()
        data = json.loads(text)
        if not isinstance(data, dict):
            data = {}
        blocking = data.get("blocking") or []
        perf = data.get("perf") or []
        count = len(blocking) + sum(1 for p in perf if isinstance(p, dict) and p.get("blocking"))
        conn.execute(
            verdict.update().where(verdict.c.flight_id == flight_id).values(regressions=count)
        )


def downgrade() -> None:
    with op.batch_alter_table("verdict") as batch:
        batch.drop_column("regressions")
