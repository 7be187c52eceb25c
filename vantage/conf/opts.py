"""Option listing for oslo-config-generator (`vantage.conf.opts:list_opts`)."""
from __future__ import annotations

from vantage.conf import api, auth, controlplane, database, default, secrets


def list_opts():
    return [
        (None, default.opts),
        (api.GROUP, api.opts),
        (auth.GROUP, auth.opts),
        (database.GROUP, database.opts),
        (secrets.GROUP, secrets.opts),
        *controlplane.list_opts(),
    ]
