"""addp_mm: ADDP (Alternating Denoising Diffusion Process, ICLR 2024) for OpenMMLab 2.x.

Importing the package registers every module it defines: algorithms and their
parts in mmpretrain's registries, and the dense-prediction parts also in mmdet's
and mmseg's. Configs load it with ``custom_imports=dict(imports=['addp_mm'])``.
It also registers the model zoo (``model-index.yml``) with mmpretrain's model
hub, so ``mmpretrain.list_models('*addp*')`` lists the ADDP configs.
"""
from . import datasets, engine, evaluation, models  # noqa: F401
from .apis.model_index import register_addp_model_index
from .version import __version__  # noqa: F401

register_addp_model_index()
