"""addp_mm: ADDP (Alternating Denoising Diffusion Process, ICLR 2024) for OpenMMLab 2.x.

Importing the package registers every module it defines: algorithms and their
parts in mmpretrain's registries, and the dense-prediction parts also in mmdet's
and mmseg's. Configs load it with ``custom_imports=dict(imports=['addp_mm'])``. It also
routes mmengine's checkpoint reading through
:func:`addp_mm.utils.checkpoint.safe_torch_load` (``weights_only=True``) and registers the
model zoo (``model-index.yml``) with mmpretrain's model hub, so
``mmpretrain.list_models('*addp*')`` lists the ADDP configs.
"""
from . import datasets, engine, evaluation, models  # noqa: F401
from .apis.model_index import register_addp_model_index
from .utils.checkpoint import install_mmengine_loader
from .version import __version__  # noqa: F401

# mmengine's load_from / resume / Pretrained init read through the safe loader
install_mmengine_loader()
register_addp_model_index()
