"""addp_mm: ADDP (Alternating Denoising Diffusion Process, ICLR 2024) for OpenMMLab 2.x.

Importing the package registers every module it defines: algorithms and their
parts in mmpretrain's registries, and the dense-prediction parts also in mmdet's
and mmseg's. Configs load it with ``custom_imports=dict(imports=['addp_mm'])``. It also
routes mmengine's checkpoint reading through
:func:`addp_mm.utils.checkpoint.safe_torch_load` (``weights_only=True``; remote names are
downloaded as mmengine does, then read the same way), makes whole-model loading strict
(:mod:`addp_mm.engine.strict_loading`: ``load_from``, ``--resume`` and ``load_checkpoint`` of a
whole ADDP model refuse a file that does not fit, in one line) and registers the model zoo
(``model-index.yml``) with mmpretrain's model hub, so ``mmpretrain.list_models('*addp*')``
lists the ADDP configs.
"""
from . import datasets, engine, evaluation, models  # noqa: F401
from .apis.model_index import register_addp_model_index
from .engine.strict_loading import install_strict_loading
from .utils.checkpoint import install_mmengine_loader
from .version import __version__  # noqa: F401

# mmengine's load_from / resume / Pretrained init read through the safe loader
install_mmengine_loader()
# whole-model loads (load_from, resume, load_checkpoint of a whole model) are strict
install_strict_loading()
register_addp_model_index()
