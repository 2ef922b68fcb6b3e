import os.path as osp

import pytest


@pytest.fixture(scope='session')
def embedded_cwd(tmp_path_factory) -> str:
    """A working directory whose ``data/embedded_photos`` holds the embedded dataset."""
    cwd = str(tmp_path_factory.mktemp('embedded_cwd'))
    from addp_mm.datasets import build_embedded_photos
    build_embedded_photos(osp.join(cwd, 'data', 'embedded_photos'), crop_size=64)
    return cwd


def _enter_mmpretrain_scope() -> None:
    import uuid

    from mmengine.registry import DefaultScope
    DefaultScope.get_instance(f'addp-test-{uuid.uuid4().hex}', scope_name='mmpretrain')


@pytest.fixture(autouse=True, scope='module')
def _mmpretrain_default_scope_per_module():
    """Module-scoped fixtures are built before function-scoped ones: reset first."""
    _enter_mmpretrain_scope()
    yield


@pytest.fixture(autouse=True)
def _mmpretrain_default_scope():
    """Start every test in mmpretrain's scope.

    mmengine keeps the most recently created ``DefaultScope`` process-wide, so a
    detection or segmentation test would otherwise leave ``mmdet``/``mmseg`` as
    the scope of every later registry build.
    """
    _enter_mmpretrain_scope()
    yield
