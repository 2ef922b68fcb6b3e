"""Fixtures shared by the tests; helpers live in ``tests/helpers``."""
import os.path as osp

import pytest
import torch


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


@pytest.fixture
def one_thread():
    """One intra-op thread: small CPU models run far faster on shared cores."""
    from helpers.detection import single_thread
    with single_thread():
        yield


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory) -> str:
    """A tiny COCO-format detection dataset written from real photos."""
    from helpers.detection import write_tiny_coco
    return write_tiny_coco(str(tmp_path_factory.mktemp('tiny_coco')))


@pytest.fixture(scope='session')
def tiny_ade(tmp_path_factory) -> str:
    """A tiny ADE20k-format segmentation dataset written from real photos."""
    from helpers.segmentation import write_tiny_ade
    return write_tiny_ade(str(tmp_path_factory.mktemp('tiny_ade')))


@pytest.fixture(scope='module')
def tiny_addp():
    """The tiny generation ADDP with random weights (see ``helpers.generation``)."""
    from helpers.generation import build_tiny_addp
    torch.set_num_threads(2)
    return build_tiny_addp()


@pytest.fixture(scope='session')
def random_inception_file(tmp_path_factory) -> str:
    """torch-fidelity's Inception-v3 with random weights, saved as a weights file."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe
    cls = fe.FeatureExtractorInceptionV3
    orig_load, orig_url = cls.load_state_dict, fe.load_state_dict_from_url
    cls.load_state_dict = lambda self, *a, **k: None
    fe.load_state_dict_from_url = lambda *a, **k: {}
    try:
        torch.manual_seed(0)
        net = cls('inception-v3-compat', ['2048', 'logits_unbiased'], feature_extractor_weights_path=None)
    finally:
        cls.load_state_dict, fe.load_state_dict_from_url = orig_load, orig_url
    path = str(tmp_path_factory.mktemp('inception') / 'inception_random.pth')
    torch.save(net.state_dict(), path)
    return path
