"""Helpers shared by ``tools/train.py`` and ``tools/test.py``.

These scripts are the only places where full unpickling of mmengine Runner
checkpoints is allowed (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``): mmengine
0.10.7 calls ``torch.load`` without ``weights_only`` and its checkpoints store
``HistoryBuffer`` objects. Library loaders of third-party files always pass
``weights_only=True`` explicitly, which the variable does not override.
"""
import difflib
import os
import os.path as osp
import sys
from typing import Any, Dict

# Runner checkpoints written by these tools must resume (see module docstring).
os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
# Make `addp_mm` importable from a plain checkout (custom_imports needs it).
_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from mmengine.config import Config, ConfigDict  # noqa: E402

SCOPES = ('mmpretrain', 'mmdet', 'mmseg')


class ToolError(SystemExit):
    """Exit with a one-line, actionable message instead of a traceback."""

    def __init__(self, msg: str) -> None:
        super().__init__(f'error: {msg}')


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
