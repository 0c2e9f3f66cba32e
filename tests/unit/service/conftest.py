import pytest
from service_world import World


@pytest.fixture
def world() -> World:
    return World()
