"""ADDP's model zoo in mmpretrain's model hub, and a builder for every codebase.

``import addp_mm`` registers ``model-index.yml`` (the repository root, or
``addp_mm/.mim/`` in a packaged install) with mmpretrain's
``ModelHub.register_model_index``, so::

    import addp_mm, mmpretrain
    mmpretrain.list_models('*addp*')     # every ADDP zoo config
    model = mmpretrain.get_model('addp_vit-base-p16_iterdec-cosine-20step_in1k-256px',
                                 pretrained='checkpoints/addp-vit-base-16_mm.pth')

``mmpretrain.get_model`` builds every entry (mmengine finds mmdet's and mmseg's
modules from mmpretrain's scope); for a pretraining config it also wants the
frozen parts' own files, which a full ADDP checkpoint makes redundant.
:func:`get_model` here needs neither: it builds each config in its own scope,
without the frozen parts' files, and reads the checkpoint with ``weights_only``
and strict key checks. ``pretrained=True`` downloads nothing: the ``Weights``
of a metafile name the official release file, which needs converting first; a
local path or a URL of a converted file is what loads.
"""
import copy
import os.path as osp
from typing import List, Optional, Union

import torch
from mmengine.config import Config

__all__ = ['MODEL_INDEX', 'register_addp_model_index', 'list_addp_models', 'get_model_config',
           'init_model', 'get_model']

_PKG = osp.dirname(osp.dirname(osp.abspath(__file__)))
_CANDIDATES = (osp.join(_PKG, '.mim', 'model-index.yml'),
               osp.join(osp.dirname(_PKG), 'model-index.yml'))
#: the registered index file (None when neither location has one)
MODEL_INDEX: Optional[str] = next((p for p in _CANDIDATES if osp.isfile(p)), None)
_names: List[str] = []


def register_addp_model_index(path: Optional[str] = None) -> List[str]:
    """Register ADDP's model index with mmpretrain's ``ModelHub`` (once).

    Args:
        path (str, optional): A ``model-index.yml``. Defaults to
            :data:`MODEL_INDEX`.

    Returns:
        list[str]: The registered model names (lower case).
    """
    global _names
    path = path or MODEL_INDEX
    if path is None or _names:
        return list(_names)
    from mmpretrain.apis.model import ModelHub
    from modelindex.load_model_index import load
    index = load(path)
    index.build_models_with_collections()
    names = [m.name.lower() for m in index.models]
    if not any(ModelHub.has(n) for n in names):  # a second registration would clash
        ModelHub.register_model_index(path, config_prefix=osp.dirname(osp.abspath(path)))
    _names = names
    return list(names)


def list_addp_models(pattern: Optional[str] = None) -> List[str]:
    """ADDP model names, optionally filtered by a ``fnmatch`` pattern."""
    import fnmatch
    names = register_addp_model_index()
    return sorted(fnmatch.filter(names, pattern) if pattern else names)


def get_model_config(name: str) -> Config:
    """The config of a registered model name, or of a config file path."""
    from mmpretrain.apis.model import ModelHub
    if name.endswith('.py') or osp.isfile(name):
        if not osp.isfile(name):
            raise ValueError(f'config file not found: {name!r}')
        return Config.fromfile(name)
    register_addp_model_index()
    if not ModelHub.has(name.lower()):
        import difflib
        close = difflib.get_close_matches(name.lower(), list_addp_models(), n=3, cutoff=0.4)
        raise ValueError(f'{name!r} is neither a config file nor a model name'
                         + (f'; did you mean {close}?' if close else '') +
                         " (mmpretrain.list_models('*addp*') lists the names)")
    return ModelHub.get(name).config


def _registry(scope: str):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    elif scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    return MODELS


def init_model(config: Union[str, Config],
               checkpoint: Optional[str] = None,
               device: Union[None, str, torch.device] = None,
               **kwargs) -> torch.nn.Module:
    """Build the model of any ADDP config in its own codebase and load a local checkpoint.

    Args:
        config (str | Config): Config path or object (mmpretrain, mmdet or
            mmseg scope).
        checkpoint (str, optional): Local checkpoint (a Runner checkpoint, or
            any file whose ``state_dict``/``model`` matches the model), read
            with ``weights_only``. None keeps the initial weights.
        device (str | torch.device, optional): Where to move the model.
            Defaults to None (where it was built: CPU, or the current
            ``torch.device`` context).
        **kwargs: Merged into the model config (``model.<key>``).

    Returns:
        nn.Module: The model in eval mode, with ``cfg`` set to the config.
    """
    from .scope import codebase_scope
    cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
    if kwargs:
        cfg.merge_from_dict({'model': kwargs})
    scope = cfg.get('default_scope', 'mmpretrain')
    model_cfg = copy.deepcopy(cfg.model)
    if model_cfg.get('type') in ('ADDP', 'mmpretrain.ADDP'):
        # every weight comes from the checkpoint (or stays random): the frozen
        # parts' own files are not read
        model_cfg['require_frozen_checkpoints'] = False
        for part in ('tokenizer', 'token_predictor'):
            if isinstance(model_cfg.get(part), dict):
                model_cfg[part]['checkpoint'] = None
    if scope == 'mmpretrain':
        model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor', None))
    with codebase_scope(scope):  # the caller's scope is restored afterwards
        model = _registry(scope).build(model_cfg)
    if checkpoint is not None:
        from addp_mm.utils.checkpoint import load_external_state_dict, load_state_dict_strict
        sd = load_external_state_dict(checkpoint, keys=('state_dict', 'model'))
        load_state_dict_strict(model, sd, source=repr(checkpoint),
                               ignore_unexpected=('data_preprocessor.', ))
    model.cfg = cfg
    if device is not None:
        model = model.to(device)
    return model.eval()


def get_model(name: str, pretrained: Optional[str] = None,
              device: Union[None, str, torch.device] = None, **kwargs) -> torch.nn.Module:
    """Build a registered ADDP model (by name or config path), in its own codebase.

    Like ``mmpretrain.get_model``, but for detection and segmentation configs
    too. ``pretrained`` is a whole-model checkpoint: a local ``.pth`` or
    ``.safetensors`` file or a URL (downloaded as mmengine does, read with
    ``weights_only``), loaded strictly; None keeps random weights.
    """
    if pretrained is True:
        raise ValueError('pretrained=True: nothing is downloaded for it, because the metafile '
                         'names an official release file that needs converting first '
                         '(tools/model_converters/addp_to_mm.py); pass the path or URL of the '
                         'converted checkpoint as `pretrained`')
    return init_model(get_model_config(name), pretrained or None, device, **kwargs)
