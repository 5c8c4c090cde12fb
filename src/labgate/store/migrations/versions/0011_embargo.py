"""Embargoed flights: a flight's embargo (group, until); users, their groups, API tokens
(hashed); the audit log of who saw embargoed work.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flight") as batch:
        batch.add_column(sa.Column("embargo_group", sa.String(200)))
        batch.add_column(sa.Column("embargo_until", sa.DateTime(timezone=True)))
    op.create_table(
        "lab_user",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("email", sa.String(300)),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "user_group",
        sa.Column(
            "user",
            sa.String(200),
            sa.ForeignKey("lab_user.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("group", sa.String(200), primary_key=True),
        sa.Column("admin", sa.Boolean, nullable=False),
    )
    op.create_index("ix_user_group_group", "user_group", ["group"])
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "user",
            sa.String(200),
            sa.ForeignKey("lab_user.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "embargo_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column(
            "flight_id",
            sa.Integer,
            sa.ForeignKey("flight.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("group", sa.String(200), nullable=False),
        sa.Column("what", sa.Text, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_embargo_audit_group", "embargo_audit", ["group", "id"])


def downgrade() -> None:
    op.drop_index("ix_embargo_audit_group", "embargo_audit")
    op.drop_table("embargo_audit")
    op.drop_table("api_token")
    op.drop_index("ix_user_group_group", "user_group")
    op.drop_table("user_group")
    op.drop_table("lab_user")
    with op.batch_alter_table("flight") as batch:
        batch.drop_column("embargo_until")
        batch.drop_column("embargo_group")
