import pytest
from addp_seg_helpers import single_thread, write_tiny_ade


@pytest.fixture(scope='session')
def tiny_ade(tmp_path_factory) -> str:
    return write_tiny_ade(str(tmp_path_factory.mktemp('tiny_ade')))


@pytest.fixture(autouse=True)
def _one_thread():
    """Small CPU models run far faster with one intra-op thread on shared cores."""
    with single_thread():
        yield
