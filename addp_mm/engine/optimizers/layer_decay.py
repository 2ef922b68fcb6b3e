"""Layer-wise lr decay for classifiers, detectors and segmentors.

mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` asks the *model* for
``get_layer_depth``; mmpretrain classifiers and self-supervisors have it, mmdet
detectors and mmseg segmentors do not (and mmdet's / mmseg's own constructors
dispatch on backbone class names). This subclass falls back to
``model.backbone.get_layer_depth(name, 'backbone.')``, so the same rule

    lr(param) = base_lr * layer_decay_rate ** (num_layers + 1 - layer_id)

(``layer_id`` 0 for patch/pos embedding and cls token, ``i + 1`` for block
``i``, ``num_layers + 1`` for everything else incl. neck and heads; the BEiT /
MAE / ViTDet rule) applies to any model whose backbone implements
``get_layer_depth`` — :class:`~addp_mm.models.backbones.ADDPViTDetBackbone`,
:class:`~addp_mm.models.backbones.ADDPVisionTransformer` and mmpretrain's ViTs.

It is registered in mmpretrain's, mmdet's and mmseg's
``OPTIM_WRAPPER_CONSTRUCTORS`` as ``ADDPLayerDecayOptimWrapperConstructor``.
Usage::

    optim_wrapper = dict(
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.1),
        constructor='ADDPLayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.7, norm_decay_mult=0.,
                           custom_keys={'pos_embed': dict(decay_mult=0.)}))
"""
from typing import Callable, List, Optional

from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor
from torch import nn

from addp_mm.registry import register_optim_constructor_everywhere


@register_optim_constructor_everywhere
class ADDPLayerDecayOptimWrapperConstructor(LearningRateDecayOptimWrapperConstructor):
    """Layer-decay constructor that also works for detectors and segmentors.

    ``paramwise_cfg`` keys: ``layer_decay_rate`` (default 1.0, i.e. no decay),
    ``bias_decay_mult``, ``norm_decay_mult``, ``flat_decay_mult``,
    ``custom_keys`` (weight-decay multipliers matched as substrings of the full
    parameter name), as in mmpretrain. An optional ``num_layers`` (the mmseg
    spelling) is checked against the backbone's depth instead of being
    silently ignored. Frozen parameters (``requires_grad=False``) are skipped.
    """

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   get_layer_depth: Optional[Callable] = None,
                   **kwargs) -> None:
        """Add ``module``'s parameters with layer-decayed lrs to ``params``."""
        if prefix == '' and get_layer_depth is None and not hasattr(module, 'get_layer_depth'):
            backbone = getattr(module, 'backbone', None)
            if backbone is None or not hasattr(backbone, 'get_layer_depth'):
                raise NotImplementedError(
                    f'layer-wise lr decay needs `get_layer_depth` on the model '
                    f'({type(module).__name__}) or on model.backbone '
                    f'({type(backbone).__name__ if backbone is not None else "missing"}). '
                    'Use an ADDP backbone (ADDPViTDetBackbone / ADDPVisionTransformer) or drop '
                    "constructor='ADDPLayerDecayOptimWrapperConstructor'.")
            expected = self.paramwise_cfg.get('num_layers')
            depth = getattr(backbone, 'num_layers', None)
            if expected is not None and depth is not None and int(expected) != int(depth):
                raise ValueError(
                    f'paramwise_cfg.num_layers={expected} but the backbone has {depth} blocks; '
                    'remove num_layers (the depth is read from the backbone) or fix it.')

            def get_layer_depth(name: str):  # noqa: E306
                return backbone.get_layer_depth(name, 'backbone.')
        super().add_params(params, module, prefix=prefix, get_layer_depth=get_layer_depth,
                           **kwargs)


__all__ = ['ADDPLayerDecayOptimWrapperConstructor']
