"""An optimizer-wrapper constructor that skips frozen sub-modules quietly.

mmengine's ``DefaultOptimWrapperConstructor`` logs one WARNING per parameter
with ``requires_grad=False``. ADDP freezes a whole VQGAN and a MAGE predictor
(about 600 tensors at base size), which buries the training log. This
subclass builds exactly the same parameter groups but skips a sub-module whose
parameters are all frozen, and logs one summary line instead.

Registered in mmpretrain's, mmdet's and mmseg's ``OPTIM_WRAPPER_CONSTRUCTORS``
as ``ADDPFrozenAwareOptimWrapperConstructor``. Usage::

    optim_wrapper = dict(
        optimizer=dict(type='AdamW', lr=1.5e-4, weight_decay=0.05),
        constructor='ADDPFrozenAwareOptimWrapperConstructor',
        paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
"""
from typing import List

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from addp_mm.registry import register_optim_constructor_everywhere

__all__ = ['ADDPFrozenAwareOptimWrapperConstructor']


@register_optim_constructor_everywhere
class ADDPFrozenAwareOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` without a warning per frozen tensor.

    Same arguments and the same parameter groups as the parent.
    """

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
