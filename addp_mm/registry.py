"""Registration helpers.

addp_mm does not create a registry scope of its own. Algorithms and their parts
go into mmpretrain's registries; modules meant for dense prediction are also
registered (the same class object) into mmdet's and mmseg's ``MODELS`` so a bare
``type='ADDPViTDetBackbone'`` resolves under ``default_scope='mmdet'`` or ``'mmseg'``.
"""
from typing import Type

from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS as PRETRAIN_OPTIM_CONSTRUCTORS


def _extra_registries(kind: str) -> list:
    regs = []
    try:
        from mmdet import registry as det_registry
        regs.append(getattr(det_registry, kind))
    except ImportError:  # pragma: no cover - mmdet is a hard requirement of the suite
        pass
    try:
        from mmseg import registry as seg_registry
        regs.append(getattr(seg_registry, kind))
    except ImportError:  # pragma: no cover
        pass
    return regs


def register_model(cls: Type) -> Type:
    """Register ``cls`` in mmpretrain's ``MODELS`` only."""
    PRETRAIN_MODELS.register_module(module=cls)
    return cls


def register_model_everywhere(cls: Type) -> Type:
    """Register ``cls`` in the ``MODELS`` of mmpretrain, mmdet and mmseg."""
    PRETRAIN_MODELS.register_module(module=cls)
    for reg in _extra_registries('MODELS'):
        reg.register_module(module=cls)
    return cls


def register_alias_in_dense_codebases(cls: Type, name: str) -> None:
    """Make an mmpretrain module (e.g. ``LN2d``) buildable by ``name`` under
    mmdet's and mmseg's default scopes; a name they already have is kept."""
    for reg in _extra_registries('MODELS'):
        if name not in reg.module_dict:
            reg.register_module(name=name, module=cls)


def register_optim_constructor_everywhere(cls: Type) -> Type:
    """Register an optimizer-wrapper constructor in all three codebases."""
    PRETRAIN_OPTIM_CONSTRUCTORS.register_module(module=cls)
    for reg in _extra_registries('OPTIM_WRAPPER_CONSTRUCTORS'):
        reg.register_module(module=cls)
    return cls


__all__ = ['register_model', 'register_model_everywhere', 'register_alias_in_dense_codebases',
           'register_optim_constructor_everywhere']
