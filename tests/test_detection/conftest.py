import pytest
from addp_det_helpers import single_thread, write_tiny_coco


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory) -> str:
    return write_tiny_coco(str(tmp_path_factory.mktemp('tiny_coco')))


@pytest.fixture(autouse=True)
def _one_thread():
    """Small CPU models run far faster with one intra-op thread on shared cores."""
    with single_thread():
        yield
