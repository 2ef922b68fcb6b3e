"""Helpers shared by ``tools/train.py`` and ``tools/test.py``.

Importing this module routes every checkpoint mmengine reads (``load_from``,
``--resume``, ``Pretrained`` init) through
:func:`addp_mm.utils.checkpoint.safe_torch_load`: ``torch.load`` with
``weights_only=True`` and only the types a Runner checkpoint holds allowed.
"""
import contextlib
import difflib
import os
import os.path as osp
import re
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple

# Make `addp_mm` importable from a plain checkout (custom_imports needs it).
_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from mmengine.config import Config, ConfigDict  # noqa: E402

from addp_mm.utils.checkpoint import (CheckpointError, install_mmengine_loader,  # noqa: E402
                                      load_remote, read_checkpoint, safe_torch_load)
from addp_mm.utils.downloads import fetch, is_remote  # noqa: E402
from addp_mm.utils.outputs import OutputError, check_output_dir  # noqa: E402

install_mmengine_loader()

SCOPES = ('mmpretrain', 'mmdet', 'mmseg')


class ToolError(SystemExit):
    """Exit with a one-line, actionable message instead of a traceback."""

    def __init__(self, msg: str) -> None:
        super().__init__(f'error: {msg}')


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn checkpoint and output-path errors into a one-line exit."""
    try:
        yield
    except (CheckpointError, OutputError) as err:
        raise ToolError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None


def check_work_dir(path: str) -> None:
    """Fail before building anything if the work dir cannot be written."""
    try:
        check_output_dir(path, what='work dir')
    except OutputError as err:
        raise ToolError(f'{err} (set it with --work-dir)') from None


def read_runner_checkpoint(path: str, what: str) -> dict:
    """Read (memory-mapped; a URL is downloaded first) and check a checkpoint
    written by ``tools/train.py``.

    Raises:
        ToolError: One line if the file is missing, refused, corrupt or not a
            Runner checkpoint (no ``meta`` with ``epoch``/``iter``, no
            ``state_dict``).
    """
    with one_line_errors():
        ckpt = read_checkpoint(path, mmap=True)
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or 'iter' not in meta or 'epoch' not in meta \
            or 'state_dict' not in ckpt:
        keys = sorted(map(str, ckpt))[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ToolError(
            f'{what} {path!r} is not a checkpoint written by tools/train.py (it has no '
            f"'meta' with epoch/iter and 'state_dict'; it holds {keys}). To start from its "
            f'weights instead, use --cfg-options load_from={path}')
    return ckpt


def local_checkpoint(name: str) -> str:
    """The local file of a checkpoint given on the command line.

    A remote name (``https://``, ``open-mmlab://`` ...) is downloaded into
    mmengine's cache and read once by the safe loader (a refused download is
    deleted again); its cached path is returned. A local path is returned as is.

    Raises:
        ToolError: One line if the download fails or the file is refused.
    """
    if not is_remote(name):
        return name
    with one_line_errors():
        load_remote(name, mmap=True)
        return fetch(name)[0]


#: Header line of a config that cannot run as written: ``# Run first: <what>``.
RUN_FIRST_RE = re.compile(r'^#\s*Run first:\s*(.+?)\s*$')
#: Dataset types that write their own data on first use (no data_root needed).
SELF_GENERATING_DATASETS = ('ADDPEmbeddedPhotos', 'ADDPGenerationDataset')


def run_first_hint(config_path: str) -> Optional[str]:
    """The ``# Run first: ...`` line of the config's leading comment block."""
    with open(config_path, encoding='utf-8') as f:
        for line in f:
            if not line.startswith('#'):
                break
            m = RUN_FIRST_RE.match(line)
            if m:
                return m.group(1)
    return None


def _datasets(ds: Any) -> Iterator[Any]:
    if isinstance(ds, (dict, ConfigDict)):
        inner = [ds.get('dataset')] + list(ds.get('datasets') or [])
        inner = [d for d in inner if isinstance(d, (dict, ConfigDict))]
        if inner:
            for d in inner:
                yield from _datasets(d)
        else:
            yield ds


def missing_inputs(cfg: Config, loaders: Tuple[str, ...]) -> List[Tuple[str, str]]:
    """Config entries that name local files or folders that do not exist.

    Checks every ``checkpoint`` / ``pretrained`` path under ``model`` and the
    ``data_root`` of the given dataloaders (datasets that generate their own
    data are skipped). Remote names (``scheme://``) are left to the loader.

    Returns:
        list[tuple[str, str]]: ``(config key, path)`` pairs.
    """
    out: List[Tuple[str, str]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, (dict, ConfigDict)):
            for k, v in node.items():
                if k in ('checkpoint', 'pretrained') and isinstance(v, str) and v \
                        and '://' not in v:
                    if not osp.isfile(v):
                        out.append((f'{where}.{k}', v))
                else:
                    walk(v, f'{where}.{k}')
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f'{where}.{i}')

    walk(cfg.get('model'), 'model')
    for name in loaders:
        loader = cfg.get(name)
        if not isinstance(loader, (dict, ConfigDict)):
            continue
        for ds in _datasets(loader.get('dataset')):
            if str(ds.get('type', '')).split('.')[-1] in SELF_GENERATING_DATASETS:
                continue
            root = ds.get('data_root')
            if isinstance(root, str) and root and not osp.isdir(root):
                out.append((f'{name}.dataset.data_root', root))
    return out


def check_inputs_exist(cfg: Config, config_path: str, loaders: Tuple[str, ...]) -> None:
    """Exit in one line if the config's data or weight files are missing.

    The message ends with the config's ``# Run first:`` line when it has one.
    """
    missing = missing_inputs(cfg, loaders)
    if not missing:
        return
    key, path = missing[0]
    more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
    raise ToolError(f'{key} {path!r} does not exist{more}. ' + missing_hint(config_path, key))


def missing_hint(config_path: str, key: str = 'the path') -> str:
    hint = run_first_hint(config_path)
    if hint:
        return f'Run first: {hint}'
    return f'Set it in the config or with --cfg-options {key}=PATH.'


def load_config(path: str) -> Config:
    if not osp.isfile(path):
        hint = ''
        cfg_dir = osp.join(_ROOT, 'configs')
        if osp.isdir(cfg_dir):
            names = [osp.relpath(osp.join(d, f), _ROOT) for d, _, fs in os.walk(cfg_dir)
                     for f in fs if f.endswith('.py') and '_base_' not in d]
            close = difflib.get_close_matches(path, names, n=3, cutoff=0.5)
            if close:
                hint = f' Did you mean: {", ".join(close)}?'
        raise ToolError(f'config file not found: {path!r}.{hint} Configs live under configs/.')
    return Config.fromfile(path)


def _lookup(cfg: Any, key: str) -> Any:
    if isinstance(cfg, (dict, ConfigDict)):
        return cfg[key]
    if isinstance(cfg, (list, tuple)) and key.isdigit():
        return cfg[int(key)]
    raise KeyError(key)


def check_cfg_options(cfg: Config, options: Dict[str, Any]) -> None:
    """Reject ``--cfg-options`` keys that look like typos.

    Every intermediate component must exist. A new leaf key is allowed (it
    adds an argument), unless it is a near miss of an existing key, which is
    almost always a typo (``max_iter`` for ``max_iters``).
    """
    for full_key in options:
        parts = full_key.split('.')
        node: Any = cfg._cfg_dict if isinstance(cfg, Config) else cfg
        for depth, part in enumerate(parts):
            is_leaf = depth == len(parts) - 1
            try:
                node = _lookup(node, part)
                continue
            except (KeyError, IndexError):
                pass
            siblings = list(node.keys()) if isinstance(node, (dict, ConfigDict)) else []
            close = difflib.get_close_matches(part, [str(s) for s in siblings], n=3, cutoff=0.75)
            where = '.'.join(parts[:depth]) or '<top level>'
            if not is_leaf or close:
                hint = f' Did you mean {", ".join(".".join(parts[:depth] + [c]) for c in close)}?' \
                    if close else f' Keys at {where}: {sorted(map(str, siblings))[:12]}.'
                raise ToolError(f'--cfg-options key {full_key!r}: {part!r} does not exist '
                                f'under {where}.{hint}')
            break


def check_scope(cfg: Config) -> str:
    scope = cfg.get('default_scope', None)
    if scope not in SCOPES:
        raise ToolError(
            f"config default_scope is {scope!r}; tools/train.py and tools/test.py run "
            f"mmpretrain, mmdet and mmseg configs, so set default_scope to one of {SCOPES} "
            "(inherit the codebase's default_runtime).")
    return scope


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Make ``--launcher pytorch`` work on machines without CUDA.

    mmengine's ``init_dist`` calls ``torch.cuda.set_device`` and its Runner
    gives DDP ``device_ids=[LOCAL_RANK]``, which CPU modules reject. Without
    CUDA we start a gloo process group ourselves (the Runner then skips
    ``init_dist``) and set ``model_wrapper_cfg`` to mmengine's
    ``MMDistributedDataParallel`` with ``device_ids=None`` (the Runner only
    fills in arguments the config does not give).
    """
    import torch
    import torch.distributed as dist
    if launcher != 'pytorch' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    cfg.setdefault('env_cfg', ConfigDict())
    cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
    cfg.env_cfg.dist_cfg['backend'] = 'gloo'
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    if wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        wrapper.update(type='MMDistributedDataParallel', device_ids=None)
        wrapper.pop('output_device', None)
        wrapper.setdefault('broadcast_buffers', False)
        cfg.model_wrapper_cfg = wrapper
