"""The [api] group: how the REST API listens and answers."""
from oslo_config import cfg

GROUP = cfg.OptGroup("api", title="REST API", help="The controller's REST API server.")

opts = [
    cfg.HostAddressOpt("bind_host", default="127.0.0.1",
                       help="Address the REST API listens on (0.0.0.0 for all IPv4 addresses)."),
    cfg.PortOpt("bind_port", default=8443, help="TCP port the REST API listens on."),
    cfg.BoolOpt("tls_enabled", default=True,
                help="Serve HTTPS. When no certificate is configured, a self-signed one is "
                     "generated into state_path on first start."),
    cfg.StrOpt("tls_cert_file", help="PEM certificate (chain) for HTTPS; generated when unset."),
    cfg.StrOpt("tls_key_file", help="PEM private key for tls_cert_file."),
    cfg.StrOpt("public_url",
               help="Base URL used in references and `url` fields, such as "
                    "https://ctrl.example.com. When unset, the request's scheme and Host header "
                    "are used."),
    cfg.ListOpt("trusted_origins", default=[],
                help="Extra origins (scheme://host[:port]) accepted in the Referer of "
                     "cookie-authenticated writes, besides the API's own origin."),
    cfg.IntOpt("default_page_size", default=25, min=1, max=200,
               help="Objects per list page when the request gives no page_size."),
    cfg.IntOpt("workers", default=4, min=1, max=64,
               help="Threads running database work for requests (SQLite always uses one)."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    # a new OptGroup per ConfigOpts: oslo.config keeps overrides in the group object, so a
    # shared one would carry one configuration's overrides into the next
    conf.register_group(cfg.OptGroup(GROUP.name, title=GROUP.title, help=GROUP.help))
    conf.register_opts(opts, group=GROUP.name)
