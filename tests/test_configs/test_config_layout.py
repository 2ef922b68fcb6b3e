"""The config folders' layering and names: only configs/tests builds on other
folders' configs freely; demo, zoo and _base_ configs never build on a test
config, the demo never on a zoo config's test twin; one name order per folder."""
import ast
import glob
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_ROOT = osp.join(ROOT, 'configs')
ALL = sorted(glob.glob(osp.join(CONFIG_ROOT, '**', '*.py'), recursive=True))


def _bases(path):
    """The local files named in a config's ``_base_`` (scoped ``pkg::`` bases left out)."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_' for t in node.targets):
            value = ast.literal_eval(node.value)
            names = [value] if isinstance(value, str) else list(value)
            return [osp.normpath(osp.join(osp.dirname(path), n)) for n in names if '::' not in n]
    return []


def _folder(path):
    return osp.relpath(path, CONFIG_ROOT).split(osp.sep)[0]


def test_every_local_base_exists():
    missing = [(osp.relpath(p, ROOT), b) for p in ALL for b in _bases(p) if not osp.isfile(b)]
    assert not missing, missing


@pytest.mark.parametrize('path', [p for p in ALL if _folder(p) != 'tests'],
                         ids=lambda p: osp.relpath(p, CONFIG_ROOT))
def test_only_test_configs_build_on_test_configs(path):
    """Following the whole chain of bases, no non-test config reaches configs/tests."""
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        for base in _bases(current):
            assert _folder(base) != 'tests', (
                f'{osp.relpath(path, ROOT)} builds on {osp.relpath(base, ROOT)}: move the shared '
                'part to configs/_base_ (configs/tests may build on demo and _base_, not the '
                'other way round)')
            if base not in seen:
                seen.add(base)
                todo.append(base)


def test_dense_configs_name_the_algorithm_first():
    """OpenMMLab's order ``{algorithm}_{backbone}_...`` in every folder."""
    for path in ALL:
        name = osp.basename(path)
        for algorithm in ('upernet', 'mask-rcnn'):
            if algorithm in name:
                assert name.startswith(algorithm + '_'), osp.relpath(path, ROOT)
