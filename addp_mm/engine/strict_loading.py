"""Whole-model checkpoints load strictly; a backbone's pretrained weights may be partial.

mmengine loads ``load_from``, ``--resume`` and ``load_checkpoint(model, file)``
non-strictly: a file that does not fit the model leaves it at random weights
after a few warnings. :func:`install_strict_loading` (run by ``import
addp_mm``) makes these whole-model loads refuse such a file, in one line, with
the key accounting of :func:`addp_mm.utils.checkpoint.check_state_dict`,
before any weight is copied and before training or testing starts:

* ``Runner.load_checkpoint``, which serves ``load_from`` and ``Runner.resume``
  (``--resume``), in every runner whose config imports addp_mm or whose
  model holds a module of addp_mm, whichever tool builds it
  (``tools/train.py``, ``mim train``, the codebases' own tools). The check
  runs from the ``after_load_checkpoint`` hook point, after the other hooks
  saw the checkpoint, so it checks exactly what would be loaded. A config may
  opt out with ``load_from_strict = False`` (mmengine's behaviour: matching
  keys load, the rest is reported as warnings). Models of other codebases
  keep mmengine's non-strict loading unless the config asks for strictness.
* ``mmengine.runner.load_checkpoint`` on a whole model (an mmengine
  ``BaseModel``) that holds a module of addp_mm: what
  ``mmpretrain.get_model(<ADDP entry>, pretrained=FILE)`` and
  ``mmpretrain.apis.init_model`` use.

Partial loading stays where it is meant: ``init_cfg=dict(type='Pretrained',
...)`` and ``pretrained=`` of a backbone load into the backbone, not the whole
model, and keep their own key accounting.
"""
import functools
import re
from typing import Any, Iterable, Mapping, Optional, Sequence, Tuple

import torch
from mmengine.hooks import Hook

from addp_mm.utils.checkpoint import CheckpointError, check_state_dict

__all__ = ['RUNNER_FIT_HINT', 'CheckpointFitHook', 'checkpoint_state_dict',
           'check_checkpoint_fits', 'install_strict_loading']

#: Key prefixes that may differ between a whole-model file and the model: the
#: data preprocessor's normalisation values come from the config.
KEYS_ALLOWED_TO_DIFFER = ('data_preprocessor.', )

RUNNER_FIT_HINT = (
    'A whole-model checkpoint (load_from, --resume) must fit the config\'s model: use the config '
    "it was trained with; to start from part of a file (e.g. its backbone) use the backbone's "
    "init_cfg=dict(type='Pretrained', checkpoint=FILE, prefix='backbone.'), or set "
    'load_from_strict = False in the config to load only the matching keys.')

_DEFAULT_REVISE = ((r'^module\.', ''), )


def checkpoint_state_dict(checkpoint: Any, source: str,
                          revise_keys: Iterable[Tuple[str, str]] = _DEFAULT_REVISE) -> dict:
    """The state dict a whole-model load copies: ``state_dict`` (or the file
    itself), with mmengine's ``revise_keys`` applied.

    Raises:
        CheckpointError: If the file holds no mapping of weights.
    """
    sd = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(sd, Mapping):
        raise CheckpointError(f'checkpoint {source} holds a {type(sd or checkpoint).__name__}, '
                              'not a state dict')
    for pattern, repl in revise_keys:
        sd = {re.sub(pattern, repl, k): v for k, v in sd.items()}
    return sd


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model


def check_checkpoint_fits(model: torch.nn.Module, checkpoint: Any, source: str,
                          revise_keys: Iterable[Tuple[str, str]] = _DEFAULT_REVISE,
                          hint: str = RUNNER_FIT_HINT) -> None:
    """Refuse, in one line, a whole-model checkpoint that does not fit ``model``.

    Args:
        model (nn.Module): The model (a wrapper is unwrapped).
        checkpoint: The loaded file (``{'state_dict': ...}`` or flat).
        source (str): How to name the file in the message.
        revise_keys: ``(pattern, replacement)`` pairs applied to the keys
            first, as mmengine does. Defaults to stripping ``module.``.
        hint (str): The fix named at the end. Defaults to
            :data:`RUNNER_FIT_HINT`.

    Raises:
        CheckpointError: Missing keys, unexpected keys, shape mismatches.
    """
    sd = checkpoint_state_dict(checkpoint, source, revise_keys)
    check_state_dict(_unwrap(model), sd, source, ignore_unexpected=KEYS_ALLOWED_TO_DIFFER,
                     hint=hint)


class CheckpointFitHook(Hook):
    """Checks a ``Runner.load_checkpoint`` file against the model, after every
    other ``after_load_checkpoint`` hook and before the weights are copied.

    Added to a runner by :func:`install_strict_loading` on its first load; it
    acts only while that load is under way. A strict load checks the key
    accounting; a non-strict one only that the file holds a state dict whose
    entries for the model's keys are tensors (mmengine would fail on anything
    else with a traceback).
    """
    priority = 'LOWEST'

    def __init__(self) -> None:
        self.pending: Optional[Tuple[str, Sequence[Tuple[str, str]], bool]] = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.pending is None:
            return
        source, revise_keys, strict = self.pending
        if strict:
            check_checkpoint_fits(runner.model, checkpoint, source, revise_keys)
            return
        sd = checkpoint_state_dict(checkpoint, source, revise_keys)
        for key in _unwrap(runner.model).state_dict():
            if key in sd and not isinstance(sd[key], torch.Tensor):
                raise CheckpointError(f'checkpoint {source} is not a state dict of tensors: '
                                      f'{key!r} holds a {type(sd[key]).__name__}')


def _fit_hook(runner) -> CheckpointFitHook:
    for hook in runner.hooks:
        if isinstance(hook, CheckpointFitHook):
            return hook
    hook = CheckpointFitHook()
    runner.register_hook(hook, priority='LOWEST')
    return hook


def _wants_strict(runner) -> bool:
    """``load_from_strict`` of the config when set; otherwise strict for a
    config that imports addp_mm (``custom_imports``) or a model that holds a
    module of addp_mm. Other codebases' configs keep mmengine's behaviour in a
    process that imported addp_mm."""
    cfg = getattr(runner, 'cfg', None)
    explicit = cfg.get('load_from_strict') if cfg is not None else None
    if explicit is not None:
        return bool(explicit)
    return _imports_addp(cfg) or _holds_addp_module(_unwrap(runner.model))


def _imports_addp(cfg: Any) -> bool:
    imports = (cfg.get('custom_imports') or {}).get('imports', []) if cfg is not None else []
    imports = [imports] if isinstance(imports, str) else imports
    return any(str(name).split('.')[0] == 'addp_mm' for name in imports)


def _strict_runner_load(original):

    @functools.wraps(original)
    def load_checkpoint(self, filename, map_location='cpu', strict=False,
                        revise_keys=[(r'^module.', '')]):  # noqa: B006 - mmengine's default
        hook = _fit_hook(self)
        hook.pending = (repr(filename), list(revise_keys), bool(strict or _wants_strict(self)))
        try:
            return original(self, filename, map_location=map_location, strict=strict,
                            revise_keys=revise_keys)
        finally:
            hook.pending = None

    load_checkpoint.__addp_strict__ = True
    return load_checkpoint


def _holds_addp_module(model: torch.nn.Module) -> bool:
    return any(type(m).__module__.startswith('addp_mm.') for m in model.modules())


def _strict_whole_model_load(original):

    @functools.wraps(original)
    def load_checkpoint(model, filename, map_location=None, strict=False, logger=None,
                        revise_keys=[(r'^module\.', '')]):  # noqa: B006 - mmengine's default
        from mmengine.model import BaseModel
        target = _unwrap(model)
        if not strict and isinstance(target, BaseModel) and _holds_addp_module(target):
            from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model
            checkpoint = _load_checkpoint(filename, map_location, logger)
            check_checkpoint_fits(target, checkpoint, repr(filename), revise_keys, hint=(
                'Give the checkpoint of this model (pretrained= of the model index takes a whole '
                "model's file; a backbone's weights go to its init_cfg or pretrained=)."))
            return _load_checkpoint_to_model(model, checkpoint, strict, logger, revise_keys)
        return original(model, filename, map_location=map_location, strict=strict,
                        logger=logger, revise_keys=revise_keys)

    load_checkpoint.__addp_strict__ = True
    return load_checkpoint


def install_strict_loading() -> None:
    """Make whole-model loads strict (see the module documentation). Idempotent."""
    import mmengine.runner
    import mmengine.runner.checkpoint as mm_checkpoint
    from mmengine.runner import Runner
    if not getattr(Runner.load_checkpoint, '__addp_strict__', False):
        Runner.load_checkpoint = _strict_runner_load(Runner.load_checkpoint)
    if not getattr(mm_checkpoint.load_checkpoint, '__addp_strict__', False):
        mm_checkpoint.load_checkpoint = _strict_whole_model_load(mm_checkpoint.load_checkpoint)
    mmengine.runner.load_checkpoint = mm_checkpoint.load_checkpoint
