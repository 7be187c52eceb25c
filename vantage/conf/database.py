"""The [database] group: where the configuration store lives."""
from oslo_config import cfg

GROUP = cfg.OptGroup("database", title="Configuration store",
                     help="The SQL database holding the controller's configuration.")

opts = [
    cfg.StrOpt("connection", secret=True,
               help="SQLAlchemy URL of the store, such as "
                    "postgresql+psycopg://vantage:secret@db/vantage. When unset, a SQLite "
                    "database (WAL mode) in state_path/vantage.db is used."),
    cfg.IntOpt("pool_size", default=8, min=1,
               help="Connections kept open to a PostgreSQL server."),
    cfg.IntOpt("busy_timeout", default=10, min=1,
               help="Seconds a SQLite writer waits for another writer's lock."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(opts, group=GROUP)
