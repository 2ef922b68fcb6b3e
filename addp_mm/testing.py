"""Helpers for tests and smoke checks (like ``mmdet.testing``)."""
import os
import os.path as osp
import subprocess
import sys
from typing import List, Optional

#: The repository checkout that holds ``tools/`` and ``configs/``.
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run_tool(args: List[str], cwd: str, timeout: int = 900, check: bool = True,
             env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run ``python <args>`` with this interpreter and return the finished process.

    Args:
        args (list[str]): Script (or ``-m module``) and its arguments.
        cwd (str): Working directory.
        timeout (int): Seconds before the process is killed. Defaults to 900.
        check (bool): Raise ``AssertionError`` with the output tail when the
            exit code is not 0. Defaults to True.
        env (dict, optional): Extra environment variables. Defaults to None.
    """
    full_env = dict(os.environ)
    full_env.setdefault('OMP_NUM_THREADS', '1')
    full_env['PYTHONPATH'] = REPO_ROOT + os.pathsep + full_env.get('PYTHONPATH', '')
    if env:
        full_env.update(env)
    proc = subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-5000:]}')
    return proc

#: The fixture folder of the test suite (reference tensors, key listings).
TEST_DATA = osp.join(REPO_ROOT, 'tests', 'data')


def save_runner_checkpoint(state_dict: dict, path: str, hub_name: str, it: int = 1) -> str:
    """Write ``state_dict`` the way mmengine's Runner does (meta + a message hub
    holding a ``HistoryBuffer``), to test loaders against real Runner files.

    Args:
        state_dict (dict): Model weights.
        path (str): Output file.
        hub_name (str): Name of the MessageHub instance to create.
        it (int): Iteration recorded in ``meta``. Defaults to 1.

    Returns:
        str: ``path``.
    """
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import save_checkpoint
    hub = MessageHub.get_instance(hub_name)
    hub.update_scalar('train/loss', 1.0)
    save_checkpoint(dict(meta=dict(iter=it), state_dict=state_dict,
                         message_hub=hub.state_dict()), path)
    return path
