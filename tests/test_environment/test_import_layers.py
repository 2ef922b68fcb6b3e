"""The layering of addp_mm is a checked contract, not a habit.

``.importlinter`` (repository root) states the layers: ``apis`` above
``models`` above ``engine | evaluation | datasets`` above ``registry | utils``,
inside ``models`` the algorithms above the parts above the shared helpers
above the building blocks, and no import cycle between siblings anywhere.
``lint-imports`` checks every import statement, including the ones inside
functions. A planted violation shows that each contract bites.
"""
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest

from helpers.checkout import REPO_ROOT

LINT_IMPORTS = osp.join(osp.dirname(sys.executable), 'lint-imports')
CONFIG = osp.join(REPO_ROOT, '.importlinter')


def lint_imports(root: str) -> subprocess.CompletedProcess:
    """``lint-imports`` with the repository's contracts on the ``addp_mm`` under ``root``."""
    env = dict(os.environ, PYTHONPATH=root)
    return subprocess.run([LINT_IMPORTS, '--config', CONFIG, '--no-cache'], cwd=root,
                          capture_output=True, text=True, timeout=600, env=env)


def test_the_package_keeps_its_import_contracts():
    proc = lint_imports(REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert 'Contracts: 3 kept, 0 broken.' in proc.stdout, proc.stdout[-3000:]


@pytest.fixture
def planted(tmp_path):
    """A copy of addp_mm with a low module importing a high one and two
    evaluation modules importing each other."""
    shutil.copytree(osp.join(REPO_ROOT, 'addp_mm'), tmp_path / 'addp_mm',
                    ignore=shutil.ignore_patterns('__pycache__'))
    (tmp_path / 'addp_mm' / 'utils' / 'planted.py').write_text(
        'def f():\n    from addp_mm.models.utils.performance import PRESETS\n    return PRESETS\n')
    (tmp_path / 'addp_mm' / 'evaluation' / 'planted_a.py').write_text(
        'from addp_mm.evaluation import planted_b  # noqa: F401\n')
    (tmp_path / 'addp_mm' / 'evaluation' / 'planted_b.py').write_text(
        'def g():\n    from addp_mm.evaluation import planted_a  # noqa: F401\n')
    return str(tmp_path)


def test_a_planted_violation_breaks_the_contracts(planted):
    proc = lint_imports(planted)
    assert proc.returncode != 0
    out = proc.stdout
    assert 'Contracts: 1 kept, 2 broken.' in out, out[-3000:]
    assert 'addp_mm.utils.planted -> addp_mm.models.utils.performance' in out, out[-3000:]
    assert 'planted_a' in out and 'planted_b' in out, out[-3000:]
