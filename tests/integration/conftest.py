"""Fixtures shared by the integration tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def run(tmp_path):
    """A local cloud in netns mode (tests/integration/test_local_netns.py: NetnsRun); whatever
    it made (namespaces, links, the bridge, processes) must be gone afterwards."""
    from tests.integration.test_local_netns import NetnsRun

    netns_run = NetnsRun(tmp_path)
    try:
        yield netns_run
    finally:
        netns_run.cleanup()
        assert not netns_run.leftovers(), f"left behind: {netns_run.leftovers()}"
