"""What ``tools/train.py`` does for exact, crash-safe resuming.

* :func:`enable_exact_resume` puts :class:`~addp_mm.engine.hooks.ADDPCheckpointHook`
  in place of mmengine's ``CheckpointHook`` and adds
  :class:`~addp_mm.engine.hooks.ADDPRandomStateHook` as
  ``default_hooks.random_state``, for every config (mmpretrain, mmdet, mmseg).
* :func:`pick_resume_checkpoint` chooses the file ``--resume auto`` starts
  from: the one ``last_checkpoint`` names; if that cannot be read (truncated by
  a full disk, removed), the newest readable checkpoint of the work dir, with a
  one-line warning. (``--resume PATH`` takes ``PATH`` or fails in one line.)
"""
import glob
import os.path as osp
import re
from typing import Any, List, Optional, Sequence, Tuple

from addp_mm.utils.checkpoint import CheckpointError, safe_torch_load

_CHECKPOINT_TYPES = ('CheckpointHook', 'ADDPCheckpointHook')


def enable_exact_resume(cfg: Any) -> None:
    """Switch a config to crash-safe checkpoints and saved random states.

    A ``checkpoint`` entry of another type than mmengine's ``CheckpointHook``
    is kept, and so is ``default_hooks.random_state=None`` (the way to leave the
    random states out).

    Args:
        cfg (mmengine.Config): The config, changed in place.
    """
    hooks = dict(cfg.get('default_hooks') or {})
    ckpt = hooks.get('checkpoint', dict(type='CheckpointHook', interval=1))
    if ckpt is not None and str(ckpt.get('type', 'CheckpointHook')) in _CHECKPOINT_TYPES:
        hooks['checkpoint'] = dict(ckpt, type='ADDPCheckpointHook')
    custom = [h.get('type') for h in cfg.get('custom_hooks') or [] if hasattr(h, 'get')]
    if 'random_state' not in hooks and 'ADDPRandomStateHook' not in custom:
        hooks['random_state'] = dict(type='ADDPRandomStateHook')
    elif 'random_state' in hooks and hooks['random_state'] is None:
        del hooks['random_state']  # mmengine only accepts None for its own default hooks
    cfg.default_hooks = hooks


def _short_reason(err: Exception) -> str:
    """The first sentence of the parenthesised cause of a :class:`CheckpointError`."""
    text = str(err)
    m = re.search(r'\(([^()]*)\)', text)
    return (m.group(1) if m else text).split('. ')[0]


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be resumed from, or None if it can.

    The file is memory-mapped through the safe loader (cheap for large
    files: a truncated zip archive fails on its missing directory) and must
    hold a Runner checkpoint (``meta`` with ``epoch``/``iter``, ``state_dict``).
    """
    if not osp.isfile(path):
        return 'the file does not exist'
    try:
        ckpt = safe_torch_load(path, mmap=True)
    except CheckpointError as err:
        return _short_reason(err)
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or 'iter' not in meta or 'state_dict' not in ckpt:
        return 'not a checkpoint written by tools/train.py'
    return None


def _candidates(folders: List[str], skip: str) -> List[str]:
    """``*.pth`` files in ``folders``, newest first (modification time, then name)."""
    found = {osp.abspath(p) for folder in folders if folder and osp.isdir(folder)
             for p in glob.glob(osp.join(folder, '*.pth'))}
    found.discard(osp.abspath(skip))
    return sorted(found, key=lambda p: (osp.getmtime(p), p), reverse=True)


def _read_pointer(work_dir: str) -> Optional[str]:
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer, encoding='utf-8', errors='replace') as f:
        return f.read().strip() or pointer


def pick_resume_checkpoint(work_dir: str,
                           folders: Sequence[str] = ()) -> Tuple[Optional[str], Optional[str]]:
    """The checkpoint ``--resume auto`` starts from, and a warning if it is not the last one.

    The last checkpoint is the one ``<work_dir>/last_checkpoint`` names. If it
    cannot be read (truncated by a full disk, removed), the newest readable
    checkpoint (by modification time) in the work dir and ``folders`` is taken.

    Args:
        work_dir (str): The run's work dir.
        folders (Sequence[str]): Other folders the run saves checkpoints to
            (a ``CheckpointHook`` ``out_dir``). Defaults to ().

    Returns:
        tuple: ``(path, warning)``. ``path`` is None without a
        ``last_checkpoint`` (training starts from the beginning, as in
        mmengine). ``warning`` is one line, or None.

    Raises:
        CheckpointError: One line when no checkpoint there can be read.
    """
    last = _read_pointer(work_dir)
    if last is None:
        return None, None
    problem = checkpoint_problem(last)
    if problem is None:
        return last, None
    for cand in _candidates([work_dir, *folders], skip=last):
        if checkpoint_problem(cand) is None:
            return cand, (f'warning: cannot resume from the last checkpoint {last} ({problem}); '
                          f'resuming from {cand}, the newest readable checkpoint of the work dir')
    raise CheckpointError(
        f'cannot read checkpoint {last}, the last checkpoint of the work dir ({problem}), and no '
        f'other checkpoint in {work_dir} can be read. Start without --resume, or give a readable '
        'checkpoint with --resume PATH')


def resume_seed(path: str) -> Optional[int]:
    """The seed the run of checkpoint ``path`` used (``meta.seed``), if recorded."""
    ckpt = safe_torch_load(path, mmap=True)
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    seed = meta.get('seed') if isinstance(meta, dict) else None
    return int(seed) if isinstance(seed, int) else None


__all__ = ['enable_exact_resume', 'pick_resume_checkpoint', 'checkpoint_problem', 'resume_seed']
