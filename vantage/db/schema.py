"""Tables of the configuration store.

Objects are JSON documents with the columns every query filters on (kind, tenant, name) pulled
out and indexed; references between objects are rows of their own, so "who refers to this" is
one indexed lookup and the database itself refuses to delete a referenced object.
"""
from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

objects = sa.Table(
    "objects", metadata,
    sa.Column("uuid", sa.String(96), primary_key=True),
    sa.Column("kind", sa.String(48), nullable=False),
    sa.Column("tenant", sa.String(96), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("secrets", sa.Text, nullable=True),
    sa.Column("last_modified", sa.String(24), nullable=False),
    sa.Column("shared", sa.Boolean, nullable=False, default=False),
    sa.Column("builtin", sa.Boolean, nullable=False, default=False),
    sa.UniqueConstraint("kind", "tenant", "name", name="uq_objects_kind_tenant_name"),
    sa.Index("ix_objects_kind_shared", "kind", "shared"),
)

refs = sa.Table(
    "refs", metadata,
    sa.Column("from_uuid", sa.String(96),
              sa.ForeignKey("objects.uuid", ondelete="CASCADE", name="fk_refs_from"),
              primary_key=True),
    sa.Column("field", sa.String(256), primary_key=True),
    sa.Column("to_uuid", sa.String(96), sa.ForeignKey("objects.uuid", name="fk_refs_to"),
              primary_key=True),
    sa.Index("ix_refs_to_uuid", "to_uuid"),
)

sessions = sa.Table(
    "sessions", metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # sha256 of the cookie value
    sa.Column("user_uuid", sa.String(96), nullable=False, index=True),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("client", sa.String(64), nullable=True),
)

tokens = sa.Table(
    "tokens", metadata,
    sa.Column("uuid", sa.String(96), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_uuid", sa.String(96), nullable=False, index=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=True),
    sa.Column("last_used", sa.Float, nullable=True),
)

auditlog = sa.Table(
    "auditlog", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("username", sa.String(64), nullable=True),
    sa.Column("tenant", sa.String(96), nullable=True, index=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(48), nullable=True),
    sa.Column("obj_uuid", sa.String(96), nullable=True),
    sa.Column("obj_name", sa.String(256), nullable=True),
    sa.Column("client", sa.String(64), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
)
