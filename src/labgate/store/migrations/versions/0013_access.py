"""On-demand testing: a flight's owner (a community user) and whether only they see it; access
requests and their decisions; an API token's expiry.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMNs, which SQLite does in place: a batch operation would copy the table,
    # and dropping the old flight table deletes every row that refers to it (ON DELETE CASCADE)
    op.add_column("flight", sa.Column("owner", sa.String(200)))
    op.add_column(
        "flight", sa.Column("owner_only", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.create_index("ix_flight_owner", "flight", ["owner", "id"])
    op.add_column("api_token", sa.Column("expires", sa.DateTime(timezone=True)))
    op.create_table(
        "access_request",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(300), nullable=False),
        sa.Column("affiliation", sa.String(300), nullable=False),
        sa.Column("why", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("decided", sa.DateTime(timezone=True)),
        sa.Column("decision_why", sa.Text()),
        sa.Column("user", sa.String(200)),
        sa.Column("group", sa.String(200)),
    )
    op.create_index("ix_access_request_state", "access_request", ["state", "id"])


def downgrade() -> None:
    op.drop_index("ix_access_request_state", "access_request")
    op.drop_table("access_request")
    with op.batch_alter_table("api_token") as batch:
        batch.drop_column("expires")
    op.drop_index("ix_flight_owner", "flight")
    with op.batch_alter_table("flight") as batch:
        batch.drop_column("owner_only")
        batch.drop_column("owner")
