import os
import os.path as osp
import subprocess
import sys
from typing import List

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATA = osp.join(ROOT, 'tests', 'data')


def run_tool(args: List[str], cwd: str, timeout: int = 600, check: bool = True,
             env: dict = None) -> subprocess.CompletedProcess:
    """Run ``python <args>`` (a tool of this repo) and return the finished process."""
    full_env = dict(os.environ)
    full_env.setdefault('OMP_NUM_THREADS', '1')
    if env:
        full_env.update(env)
    proc = subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-5000:]}')
    return proc


@pytest.fixture(scope='session')
def embedded_cwd(tmp_path_factory) -> str:
    """A working directory whose ``data/embedded_photos`` holds the embedded dataset."""
    cwd = str(tmp_path_factory.mktemp('embedded_cwd'))
    from addp_mm.datasets import build_embedded_photos
    build_embedded_photos(osp.join(cwd, 'data', 'embedded_photos'), crop_size=64)
    return cwd
