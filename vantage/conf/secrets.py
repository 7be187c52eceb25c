"""The [secrets] group: the key that encrypts private keys and passphrases at rest."""
from oslo_config import cfg

GROUP = cfg.OptGroup("secrets", title="Secrets at rest",
                     help="Encryption of private keys and passphrases in the store.")

opts = [
    cfg.StrOpt("key_file",
               help="File holding the Fernet key that encrypts secrets in the store. When "
                    "unset, state_path/secret.key is used and generated (mode 0600) on first "
                    "start. Keep a copy: without it the stored secrets cannot be read."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    # a new OptGroup per ConfigOpts: oslo.config keeps overrides in the group object, so a
    # shared one would carry one configuration's overrides into the next
    conf.register_group(cfg.OptGroup(GROUP.name, title=GROUP.title, help=GROUP.help))
    conf.register_opts(opts, group=GROUP.name)
