"""Initial store: objects, references, sessions, API tokens, audit log.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "objects",
        sa.Column("uuid", sa.String(96), primary_key=True),
        sa.Column("kind", sa.String(48), nullable=False),
        sa.Column("tenant", sa.String(96), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("secrets", sa.Text, nullable=True),
        sa.Column("last_modified", sa.String(24), nullable=False),
        sa.Column("shared", sa.Boolean, nullable=False),
        sa.Column("builtin", sa.Boolean, nullable=False),
        sa.UniqueConstraint("kind", "tenant", "name", name="uq_objects_kind_tenant_name"),
    )
    op.create_index("ix_objects_kind_shared", "objects", ["kind", "shared"])
    op.create_table(
        "refs",
        sa.Column("from_uuid", sa.String(96),
                  sa.ForeignKey("objects.uuid", ondelete="CASCADE", name="fk_refs_from"),
                  primary_key=True),
        sa.Column("field", sa.String(256), primary_key=True),
        sa.Column("to_uuid", sa.String(96), sa.ForeignKey("objects.uuid", name="fk_refs_to"),
                  primary_key=True),
    )
    op.create_index("ix_refs_to_uuid", "refs", ["to_uuid"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_uuid", sa.String(96), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("client", sa.String(64), nullable=True),
    )
    op.create_index("ix_sessions_user_uuid", "sessions", ["user_uuid"])
    op.create_table(
        "tokens",
        sa.Column("uuid", sa.String(96), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("user_uuid", sa.String(96), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("expires", sa.Float, nullable=True),
        sa.Column("last_used", sa.Float, nullable=True),
    )
    op.create_index("ix_tokens_user_uuid", "tokens", ["user_uuid"])
    op.create_table(
        "auditlog",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("username", sa.String(64), nullable=True),
        sa.Column("tenant", sa.String(96), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(48), nullable=True),
        sa.Column("obj_uuid", sa.String(96), nullable=True),
        sa.Column("obj_name", sa.String(256), nullable=True),
        sa.Column("client", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
    )
    op.create_index("ix_auditlog_ts", "auditlog", ["ts"])
    op.create_index("ix_auditlog_tenant", "auditlog", ["tenant"])


def downgrade() -> None:
    for table in ("auditlog", "tokens", "sessions", "refs", "objects"):
        op.drop_table(table)
