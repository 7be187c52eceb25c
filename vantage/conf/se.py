"""Options of the Service Engine daemon (`vantage-se`), given on its command line or in
`[se]` of its configuration file."""
from __future__ import annotations

from oslo_config import cfg

GROUP = "se"

cli_opts = [
    cfg.StrOpt("config", metavar="FILE",
               help="Standalone mode: serve the virtual services described in this YAML or JSON "
                    "document (see docs/se-config.md). Reloaded on SIGHUP."),
    cfg.StrOpt("bootstrap", metavar="FILE",
               help="Managed mode: JSON bootstrap data from the controller (controller_url, "
                    "se_uuid, one-time token, controller certificate)."),
    cfg.StrOpt("state-dir", metavar="DIR",
               help="Managed mode: where the SE keeps its credentials and last configuration "
                    "(default: the bootstrap file's directory)."),
    cfg.IntOpt("workers", default=1, min=0,
               help="Worker processes sharing the listeners; 0 means one per CPU."),
    cfg.StrOpt("request-log", default="-", metavar="PATH",
               help="Where request and connection logs are written as JSON lines: a file path, "
                    "'-' for standard output, or 'none'."),
    cfg.StrOpt("stats-listen", default="127.0.0.1:9180", metavar="HOST:PORT",
               help="Address of the stats listener (GET /metrics in Prometheus text format, "
                    "GET /status); 'none' disables it."),
    cfg.StrOpt("worker-socket", metavar="PATH",
               help="(set by the supervisor of a multi-worker SE) serve this worker's counters "
                    "on a Unix socket instead of a stats listener."),
    cfg.BoolOpt("worker-queue-logs", default=False,
                help="(set by the supervisor of a managed multi-worker SE) keep request logs "
                     "for the supervisor to collect from the worker socket (GET /logs)."),
    cfg.StrOpt("source-ip", metavar="IP",
               help="Address the SE connects to servers from (default: chosen by route)."),
    cfg.FloatOpt("drain-timeout", default=30.0, min=0,
                 help="Seconds established connections of a removed listener may run on."),
    cfg.StrOpt("allocator", default="auto", choices=[
        ("auto", "jemalloc when libjemalloc.so.2 is installed, else the C library's malloc"),
        ("jemalloc", "jemalloc, or refuse to start without it"),
        ("system", "the C library's malloc")],
               help="Memory allocator of the daemon and its workers. OpenSSL allocates and "
                    "frees many small blocks per TLS handshake, which jemalloc serves with less "
                    "CPU than glibc's malloc (docs/performance.md). A library other than the "
                    "C library's is loaded with LD_PRELOAD: the daemon starts itself again "
                    "with it."),
    cfg.StrOpt("log-level", default="INFO",
               choices=["DEBUG", "INFO", "WARNING", "ERROR"],
               help="Level of the daemon's own log (standard error)."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_cli_opts(cli_opts)


def list_opts():
    return [(None, cli_opts)]
