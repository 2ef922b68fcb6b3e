"""Building an ADDP model for sampling from a config and loading a checkpoint
that can generate, with a clear error (and the fix) when it cannot.

Used by :class:`~addp_mm.apis.generator.ADDPGenerator` and ``tools/sample.py``
(both through :mod:`addp_mm.apis.generator`, which re-exports these names).
"""
import os.path as osp
from typing import Optional, Union

import torch
from mmengine.config import Config

__all__ = ['GenerationWeightsError', 'build_generation_model', 'load_generation_weights',
           'GEN_PREFIXES', 'NOT_NEEDED_FOR_GENERATION']

#: parts a checkpoint must hold to generate, with their names in messages
GEN_PREFIXES = {
    'backbone.blocks.': 'the ADDP pixel encoder',
    'neck.decoder_blocks.': 'the ADDP token decoder',
    'neck.mlm_layer.': 'the ADDP output head',
    'tokenizer.decoder.': 'the VQGAN decoder',
    'tokenizer.quantize.embedding.weight': 'the VQGAN codebook',
}
#: parts of the ADDP model that generation never uses (may be absent from a file)
NOT_NEEDED_FOR_GENERATION = ('token_predictor.', )


class GenerationWeightsError(ValueError):
    """A checkpoint cannot be used for generation (with the reason and the fix)."""


def _resolve_config(model: Union[str, Config]) -> Config:
    if isinstance(model, Config):
        return model
    if not isinstance(model, str):
        raise TypeError(f'model must be a config path, a Config or a model-index name, '
                        f'got {type(model).__name__}')
    if osp.isfile(model):
        return Config.fromfile(model)
    from .model_index import get_model_config
    return get_model_config(model)


def build_generation_model(cfg: Config, sampler: Optional[dict] = None):
    """Build the ADDP model of ``cfg`` for sampling (no frozen-part files needed).

    Args:
        cfg (Config): An ADDP pretraining or generation config.
        sampler (dict, optional): Overrides of the config's sampler settings
            (``None`` values are ignored). Defaults to None.

    Raises:
        ValueError: If the config is not an ADDP model or a setting is invalid.
    """
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model_cfg = cfg.model.copy()
    if model_cfg.get('type') not in ('ADDP', 'mmpretrain.ADDP'):
        raise ValueError(f'the config model is {model_cfg.get("type")!r}; sampling needs an ADDP '
                         'pretraining/generation config (configs/addp_gen/)')
    # weights come from the checkpoint; the frozen parts' own files are not needed
    model_cfg['require_frozen_checkpoints'] = False
    for part in ('tokenizer', 'token_predictor'):
        if isinstance(model_cfg.get(part), dict):
            model_cfg[part]['checkpoint'] = None
    sampler_cfg = dict(model_cfg.get('sampler') or cfg.get('sampler') or
                       dict(type='AlternatingDenoisingSampler'))
    sampler_cfg.update({k: v for k, v in (sampler or {}).items() if v is not None})
    model_cfg['sampler'] = sampler_cfg
    try:
        return MODELS.build(model_cfg)
    except ValueError as err:
        raise ValueError(f'invalid sampler/model settings: {err}') from err


def _frozen_part_of(sd: dict) -> Optional[tuple]:
    """``(config key, description)`` if ``sd`` holds only a tokenizer or a token
    predictor (a ``VQGANTrainer`` / ``MAGEPredictorTrainer`` checkpoint or an
    official VQGAN / MAGE state dict), else None."""
    if any(k.startswith(('backbone.', 'neck.')) for k in sd):
        return None
    if any(k.startswith('decoder_blocks.') for k in sd):  # an official release
        if 'token_emb.word_embeddings.weight' in sd and \
                not any(k.startswith('token_predictor.') for k in sd):
            return 'token_predictor', 'token-predictor (MAGE)'  # MAGE, not ADDP
        return None
    if any(k.startswith(('token_predictor.', 'token_emb.')) for k in sd):
        return 'token_predictor', 'token-predictor (MAGE)'
    if any(k.startswith(('tokenizer.', 'quantize.')) for k in sd):
        return 'tokenizer', 'tokenizer (VQGAN)'
    return None


def load_generation_weights(model: torch.nn.Module, path: str) -> None:
    """Load ``path`` strictly into an ADDP model, or explain why it cannot generate.

    The file is read with ``addp_mm.utils.checkpoint.load_external_state_dict``
    (``weights_only``; mmengine Runner checkpoints through its whitelist).

    Raises:
        GenerationWeightsError: If the file is missing, unreadable, holds no
            generation weights (with a hint: unconverted official release,
            recognition checkpoint) or does not fit the model.
    """
    from addp_mm.utils.checkpoint import CheckpointError, check_state_dict, load_external_state_dict
    try:
        sd = load_external_state_dict(path, keys=('state_dict', 'model'))
    except CheckpointError as err:
        raise GenerationWeightsError(str(err)) from err
    missing_parts = [desc for prefix, desc in GEN_PREFIXES.items()
                     if not any(k.startswith(prefix) for k in sd)]
    if missing_parts:
        frozen = _frozen_part_of(sd)
        if frozen:
            part, name = frozen
            raise GenerationWeightsError(
                f'checkpoint {path!r} is a {name} checkpoint, not an ADDP model: use it as '
                f'model.{part}.checkpoint of an ADDP pretraining config, and sample with the '
                'checkpoint that training writes.')
        if any(k.startswith(('decoder_blocks.', 'vqgan.')) for k in sd):
            hint = ('it is an official ADDP release: convert it first with '
                    'tools/model_converters/addp_to_mm.py SRC DST')
        elif any(k.startswith(('backbone.layers.', 'head.', 'layers.', 'fc_norm', 'decode_head.'))
                 for k in sd) or not any(k.startswith('neck.') for k in sd):
            hint = ('it looks like a classification/detection/segmentation backbone; generation '
                    'needs a full ADDP pretraining checkpoint (encoder + decoder + VQGAN)')
        else:
            hint = 'use a full ADDP pretraining checkpoint'
        raise GenerationWeightsError(f'checkpoint {path!r} has no generation weights: missing '
                                     f'{", ".join(missing_parts)}; {hint}.')
    own = model.state_dict()
    for k, v in own.items():  # parts generation never reads may be left out of the file
        if k.startswith(NOT_NEEDED_FOR_GENERATION) and k not in sd:
            sd[k] = v
    try:
        check_state_dict(model, sd, source=repr(path), ignore_unexpected=('data_preprocessor.', ))
    except CheckpointError as err:
        raise GenerationWeightsError(str(err)) from err
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=True)
