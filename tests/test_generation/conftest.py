"""Shared fixtures of the generation tests."""
import pytest
import torch
from gen_test_utils import build_tiny_addp


@pytest.fixture(scope='module')
def tiny_addp():
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
