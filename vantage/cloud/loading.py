"""Finding cloud drivers: entry points of the `vantage.clouds` group, loaded eagerly.

A driver that fails to load stops the controller at start with a message naming it; a typo in
an installed driver does not surface at the first virtual service.
"""
from __future__ import annotations

import logging

from stevedore import ExtensionManager

from vantage.cloud.base import CloudDriver

LOG = logging.getLogger("vantage.cloud")
NAMESPACE = "vantage.clouds"


class DriverLoadError(RuntimeError):
    pass


def _failed(manager, entrypoint, exc) -> None:
    raise DriverLoadError(f"cloud driver {entrypoint.name!r} ({entrypoint.value}) failed to "
                          f"load: {type(exc).__name__}: {exc}") from exc


def driver_classes() -> dict[str, type[CloudDriver]]:
    """vtype -> driver class, for every installed driver."""
    manager = ExtensionManager(NAMESPACE, invoke_on_load=False,
                               on_load_failure_callback=_failed)
    classes: dict[str, type[CloudDriver]] = {}
    for ext in manager:
        cls = ext.plugin
        if not (isinstance(cls, type) and issubclass(cls, CloudDriver)) or not cls.vtype:
            raise DriverLoadError(f"cloud driver {ext.name!r} ({ext.entry_point.value}) is not a "
                                  "CloudDriver with a vtype")
        if cls.vtype in classes:
            raise DriverLoadError(f"two cloud drivers serve {cls.vtype}: {classes[cls.vtype]} "
                                  f"and {cls}")
        classes[cls.vtype] = cls
        LOG.debug("cloud driver %s serves %s", ext.name, cls.vtype)
    return classes
