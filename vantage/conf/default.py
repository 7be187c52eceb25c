"""The [DEFAULT] group: where the controller keeps its state."""
from oslo_config import cfg

opts = [
    cfg.StrOpt("state_path", default="/var/lib/vantage",
               help="Directory for the controller's state: the SQLite database, the generated "
                    "TLS certificate, the secret key and the first-start admin password file."),
    cfg.BoolOpt("debug", default=False, help="Log at DEBUG level."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts)
