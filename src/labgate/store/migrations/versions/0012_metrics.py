"""Performance metrics: a step's ``metrics`` spec and ``repeat`` count, and the ``metric``
table (each run's values, with the host and its host class).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("step") as batch:
        batch.add_column(sa.Column("metrics", sa.Text()))
        batch.add_column(sa.Column("repeat", sa.Integer()))
    op.create_table(
        "metric",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "step_id",
            sa.Integer(),
            sa.ForeignKey("step.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(40), nullable=False),
        sa.Column("lower_is_better", sa.Boolean(), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("host_class", sa.String(400), nullable=False),
    )
    op.create_index("ix_metric_step", "metric", ["step_id"])
    op.create_index("ix_metric_name", "metric", ["name", "host_class"])


def downgrade() -> None:
    op.drop_index("ix_metric_name", "metric")
    op.drop_index("ix_metric_step", "metric")
    op.drop_table("metric")
    with op.batch_alter_table("step") as batch:
        batch.drop_column("repeat")
        batch.drop_column("metrics")
