import os.path as osp

import pytest


@pytest.fixture(scope='session')
def embedded_cwd(tmp_path_factory) -> str:
    """A working directory whose ``data/embedded_photos`` holds the embedded dataset."""
    cwd = str(tmp_path_factory.mktemp('embedded_cwd'))
    from addp_mm.datasets import build_embedded_photos
    build_embedded_photos(osp.join(cwd, 'data', 'embedded_photos'), crop_size=64)
    return cwd
