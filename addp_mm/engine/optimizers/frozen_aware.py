"""An optimizer-wrapper constructor that skips frozen sub-modules quietly.

mmengine's ``DefaultOptimWrapperConstructor`` logs one WARNING per parameter
with ``requires_grad=False``. ADDP freezes a whole VQGAN and a MAGE predictor
(about 600 tensors at base size), which buries the training log. This
subclass builds exactly the same parameter groups but skips a sub-module whose
parameters are all frozen, and logs one summary line instead.

``paramwise_cfg.merge_groups=True`` additionally merges the groups whose
settings are identical. mmengine makes one group per parameter whenever a
``paramwise_cfg`` is given (about 250 at base size); PyTorch's foreach / fused
optimizers then launch their kernels once per group, i.e. thousands of tiny
kernels per step on a GPU. Merged, AdamW runs one foreach pass per distinct
setting (usually two: with and without weight decay). The update of every
parameter is the same elementwise computation either way (bitwise equal,
tested); only the layout of the optimizer's state dict differs, so a run
resumes with the setting it was started with.

Registered in mmpretrain's, mmdet's and mmseg's ``OPTIM_WRAPPER_CONSTRUCTORS``
as ``ADDPFrozenAwareOptimWrapperConstructor``. Usage::

    optim_wrapper = dict(
        optimizer=dict(type='AdamW', lr=1.5e-4, weight_decay=0.05),
        constructor='ADDPFrozenAwareOptimWrapperConstructor',
        paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., merge_groups=True))
"""
from typing import List, Optional

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from addp_mm.registry import register_optim_constructor_everywhere

__all__ = ['ADDPFrozenAwareOptimWrapperConstructor']


@register_optim_constructor_everywhere
class ADDPFrozenAwareOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` without a warning per frozen tensor.

    Same arguments and the same parameter groups as the parent; with
    ``paramwise_cfg.merge_groups=True`` the groups of identical settings are
    merged (see the module docstring).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        self.merge_groups = bool(paramwise_cfg.pop('merge_groups', False))
        super().__init__(optim_wrapper_cfg, paramwise_cfg or None)

    @staticmethod
    def merge_param_groups(params: List[dict]) -> List[dict]:
        """Merge parameter groups whose options (all keys but ``params``) are
        equal, keeping the order of first appearance."""
        merged: List[dict] = []
        index = {}
        for group in params:
            key = tuple(sorted((k, repr(v)) for k, v in group.items() if k != 'params'))
            if key in index:
                merged[index[key]]['params'].extend(group['params'])
            else:
                index[key] = len(merged)
                merged.append(dict(group, params=list(group['params'])))
        return merged

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   **kwargs) -> None:
        """Add the parameter groups of ``module``; skip fully frozen children.

        Args:
            params (list[dict]): Parameter groups being built (appended to).
            module (nn.Module): The module (the whole model at the top call).
            prefix (str): Dotted name of ``module``. Defaults to ''.
            **kwargs: Passed to the parent (``is_dcn_module``).
        """
        if prefix == '':
            frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
            if frozen:
                roots = sorted({n.split('.')[0] for n in frozen})
                print_log(f'{len(frozen)} frozen parameter tensors (under {", ".join(roots)}) '
                          'are not given to the optimizer', logger='current')
        elif not any(p.requires_grad for p in module.parameters()):
            return
        super().add_params(params, module, prefix, **kwargs)
        if prefix == '' and self.merge_groups:
            params[:] = self.merge_param_groups(params)
