"""Every Python file of the package and the tools stays short enough to read
in one sitting (at most 450 lines)."""
import os
import os.path as osp

from helpers.checkout import REPO_ROOT

MAX_LINES = 450


def python_files(top: str):
    for folder, dirs, files in os.walk(osp.join(REPO_ROOT, top)):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        for name in sorted(files):
            if name.endswith('.py'):
                yield osp.join(folder, name)


def test_no_python_file_in_addp_mm_or_tools_is_over_450_lines():
    long = {}
    for top in ('addp_mm', 'tools'):
        for path in python_files(top):
            with open(path, encoding='utf-8') as f:
                n = sum(1 for _ in f)
            if n > MAX_LINES:
                long[osp.relpath(path, REPO_ROOT)] = n
    assert not long, f'split these files (at most {MAX_LINES} lines each): {long}'


def test_the_count_sees_every_package_module():
    found = {osp.relpath(p, REPO_ROOT) for top in ('addp_mm', 'tools') for p in python_files(top)}
    for rel in ('addp_mm/models/selfsup/addp.py', 'tools/demo.py', 'tools/addp_demo/report.py',
                'tools/addp_benchmark/cli.py', 'addp_mm/utils/precision.py'):
        assert rel in found, rel
