"""Paths and runners that exist only in a source checkout (not a test module).

The repository root, the test fixtures and the tool scripts are found from
this file's location (``tests/helpers/``), never from a test file's own.
"""
import os
import os.path as osp
import subprocess
import sys
from typing import List, Optional

#: The repository checkout that holds ``tools/`` and ``configs/``.
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

#: The fixture folder of the test suite (reference tensors, key listings).
TEST_DATA = osp.join(REPO_ROOT, 'tests', 'data')

#: The command-line tools and the packages behind them (``addp_demo``, ``addp_benchmark``).
TOOLS = osp.join(REPO_ROOT, 'tools')


def tools_on_path() -> str:
    """Put ``tools/`` on ``sys.path`` (as running a tool does), so a test can
    import ``addp_demo`` or ``addp_benchmark``; returns the folder."""
    if TOOLS not in sys.path:
        sys.path.insert(0, TOOLS)
    return TOOLS


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
