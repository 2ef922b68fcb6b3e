"""Optimizer-wrapper constructor for the adversarial VQGAN training
(:class:`~addp_mm.models.selfsup.VQGANTrainer`): one optimizer per sub-module."""
from typing import Optional

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapperDict
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

__all__ = ['VQGANMultiOptimWrapperConstructor']


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class VQGANMultiOptimWrapperConstructor:
    """Build one optimizer wrapper per sub-module (an ``OptimWrapperDict``).

    Each key of the config other than ``constructor``/``paramwise_cfg`` names
    an attribute of the model (``tokenizer``, ``discriminator``) and holds an
    ordinary optim-wrapper config built with mmengine's
    ``DefaultOptimWrapperConstructor`` on that sub-module::

        optim_wrapper = dict(
            constructor='VQGANMultiOptimWrapperConstructor',
            tokenizer=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-4)),
            discriminator=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-4)))

    Args:
        optim_wrapper_cfg (dict): The mapping above.
        paramwise_cfg (dict, optional): Applied to every sub-module.
            Defaults to None.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        if not isinstance(optim_wrapper_cfg, dict) or not optim_wrapper_cfg:
            raise TypeError('VQGANMultiOptimWrapperConstructor needs a dict of per-module '
                            f'optim-wrapper configs, got {optim_wrapper_cfg!r}')
        self.optim_wrapper_cfg = optim_wrapper_cfg
        self.paramwise_cfg = paramwise_cfg

    def __call__(self, model: nn.Module) -> OptimWrapperDict:
        if hasattr(model, 'module'):
            model = model.module
        wrappers = {}
        for name, cfg in self.optim_wrapper_cfg.items():
            sub = getattr(model, name, None)
            if not isinstance(sub, nn.Module):
                raise KeyError(f'optim_wrapper key {name!r} does not name a sub-module of '
                               f'{type(model).__name__}; use the attribute names '
                               "('tokenizer', 'discriminator').")
            cfg = dict(cfg)
            paramwise = cfg.pop('paramwise_cfg', self.paramwise_cfg)
            wrappers[name] = DefaultOptimWrapperConstructor(cfg, paramwise)(sub)
        return OptimWrapperDict(**wrappers)
