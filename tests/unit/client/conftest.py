import pytest

from tests.unit.client.avi_stub import AviStub


@pytest.fixture
def stub():
    with AviStub() as server:
        yield server
