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
    # a new OptGroup per ConfigOpts: oslo.config keeps overrides in the group object, so a
    # shared one would carry one configuration's overrides into the next
    conf.register_group(cfg.OptGroup(GROUP.name, title=GROUP.title, help=GROUP.help))
    conf.register_opts(opts, group=GROUP.name)
