"""The [auth] group: sessions, API tokens, passwords and login rate limits."""
from oslo_config import cfg

GROUP = cfg.OptGroup("auth", title="Authentication",
                     help="Login sessions, API tokens and password hashing.")

opts = [
    cfg.IntOpt("session_idle_timeout", default=1800, min=30,
               help="Seconds of inactivity after which a login session expires (401)."),
    cfg.IntOpt("session_max_age", default=86400, min=60,
               help="Seconds after login when a session expires regardless of activity."),
    cfg.IntOpt("token_default_lifetime", default=0, min=0,
               help="Default lifetime in seconds of an API token; 0 means it lasts until "
                    "revoked."),
    cfg.IntOpt("login_max_failures_per_user", default=5, min=1,
               help="Failed logins for one username within login_failure_window before "
                    "further attempts for it are refused (429)."),
    cfg.IntOpt("login_max_failures_per_client", default=20, min=1,
               help="Failed logins from one client address within login_failure_window before "
                    "further attempts from it are refused (429)."),
    cfg.IntOpt("login_failure_window", default=300, min=1,
               help="Seconds over which failed logins are counted."),
    cfg.IntOpt("scrypt_n", default=2 ** 14, min=2,
               help="scrypt CPU/memory cost (a power of two) for new password hashes."),
    cfg.StrOpt("admin_password_file", default="admin-password",
               help="File (relative to state_path) the generated first-start admin password "
                    "is written to, mode 0600, when VANTAGE_ADMIN_PASSWORD is not set."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    # a new OptGroup per ConfigOpts: oslo.config keeps overrides in the group object, so a
    # shared one would carry one configuration's overrides into the next
    conf.register_group(cfg.OptGroup(GROUP.name, title=GROUP.title, help=GROUP.help))
    conf.register_opts(opts, group=GROUP.name)
