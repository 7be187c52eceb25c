"""Alembic environment: runs on the connection the store hands over (see vantage.db.migrate)."""
from alembic import context

from vantage.db.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # `alembic` command line with sqlalchemy.url set in the ini
    import sqlalchemy as sa
    connection = sa.create_engine(config.get_main_option("sqlalchemy.url")).connect()

context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
