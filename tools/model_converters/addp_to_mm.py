"""Convert an official ADDP release checkpoint to an addp_mm ADDP checkpoint.

Input: ``addp-vit-base-16.pth`` / ``addp-vit-large-16.pth`` from the official
release (HF ``Changyao/ADDP``), a dict ``{'model': {...}, ...}`` read with
``torch.load(weights_only=True)``. Output: ``{'state_dict': {...}, 'meta': {...}}``
with the keys of :class:`addp_mm.models.selfsup.ADDP`:

=============================================  ==========================================
official key                                   addp_mm key
=============================================  ==========================================
``cls_token``, ``pos_embed``, ``patch_embed.*``,  ``backbone.<same>``
``tokenizer_norm.*``, ``blocks.*``, ``norm.*``
``decoder_embed.*``, ``mask_token``,              ``neck.<same>``
``decoder_pos_embed_learned``,
``decoder_pos_mask_embed``, ``decoder_pos_token_embed``,
``decoder_blocks.*``, ``decoder_norm.*``, ``token_emb.*``, ``mlm_layer.*``
``vqgan.*``                                    ``tokenizer.<rest>``
``token_predictor.<rest>``                     ``token_predictor.<rest>``
=============================================  ==========================================

Dropped as documented-unused (no ADDP computation reads them, see
``tests/data/checkpoint_keys/README.md``):

* ADDP: ``decoder_pos_embed`` (frozen, never read), ``pos_token_embed``,
  ``pos_mask_embed``, ``decoder_pred.{weight,bias}`` (allocated, never used);
* token predictor: ``cls_token``, ``pos_embed``, ``mask_token``,
  ``decoder_pos_embed``, ``patch_embed.proj.*``, ``decoder_pred.*``;
* ``token_predictor.vqgan.*``: an alias of ``vqgan.*`` (the same module under
  two names); the converter checks that every alias equals its ``vqgan.*``
  tensor and fails otherwise.

Any other key is an error, so every key of the file is accounted for.

Usage::

    python tools/model_converters/addp_to_mm.py addp-vit-base-16.pth \\
        checkpoints/addp-vit-base-16_mm.pth \\
        [--config configs/addp/addp_vit-base-p16_32xb128-amp-coslr-1600e_in1k-256px.py]

``--config`` additionally builds the model of that config (on the ``meta``
device, no memory for weights) and checks keys and shapes strictly before
anything is written. The destination is checked first and written atomically
(temporary name + rename), so a failed run leaves no output. ``--format
safetensors`` (or a ``.safetensors`` destination) writes the same tensors as a
``.safetensors`` file, with ``meta`` as JSON in its metadata. Use the
result as ``load_from`` of the pretraining config (or ``--resume`` is not
needed), as the encoder source of the transfer configs, or for generation.
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from addp_mm.models.target_generators.mage_predictor import convert_mage_state_dict  # noqa: E402
from addp_mm.models.tokenizers.vqgan import convert_vqgan_state_dict  # noqa: E402
from addp_mm.utils.checkpoint import CheckpointError, load_external_state_dict  # noqa: E402
from addp_mm.utils.checkpoint_writer import FORMATS, resolve_format, save_converted  # noqa: E402
from addp_mm.utils.outputs import OutputError, check_output_file  # noqa: E402

#: First key component -> our sub-module, for ADDP's own weights.
ENCODER_HEADS = ('cls_token', 'pos_embed', 'patch_embed', 'tokenizer_norm', 'blocks', 'norm')
DECODER_HEADS = ('decoder_embed', 'mask_token', 'decoder_pos_embed_learned', 'decoder_pos_mask_embed',
                 'decoder_pos_token_embed', 'decoder_blocks', 'decoder_norm', 'token_emb', 'mlm_layer')
#: ADDP's own keys that no computation reads (dropped).
ADDP_UNUSED_HEADS = ('decoder_pos_embed', 'pos_token_embed', 'pos_mask_embed', 'decoder_pred')

VQGAN_PREFIX = 'vqgan.'
PREDICTOR_PREFIX = 'token_predictor.'
ALIAS_PREFIX = 'token_predictor.vqgan.'


def convert_addp_state_dict(state_dict: Mapping[str, Tensor]
                            ) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """Map an official ADDP ``model`` state dict onto addp_mm ADDP keys.

    Args:
        state_dict (Mapping[str, Tensor]): ``checkpoint['model']`` of the
            official release.

    Returns:
        tuple: ``(converted, dropped)``; ``dropped`` maps every dropped
        official key to the reason.

    Raises:
        CheckpointError: On unknown keys, a missing ``vqgan.*``/
            ``token_predictor.*`` part, or aliases that differ.
    """
    if 'token_emb.word_embeddings.weight' in state_dict:
        raise CheckpointError(
            'this is a MAGE token-predictor checkpoint (token_emb.word_embeddings.* at the top '
            'level), not an ADDP release: use it as model.token_predictor.checkpoint instead.')
    converted: Dict[str, Tensor] = {}
    dropped: Dict[str, str] = {}
    unknown: List[str] = []
    own = {k: v for k, v in state_dict.items()
           if not k.startswith((VQGAN_PREFIX, PREDICTOR_PREFIX))}
    for key, value in own.items():
        head = key.split('.', 1)[0]
        if head in ENCODER_HEADS:
            converted['backbone.' + key] = value
        elif head in DECODER_HEADS:
            converted['neck.' + key] = value
        elif head in ADDP_UNUSED_HEADS:
            dropped[key] = 'documented-unused ADDP parameter (never read)'
        else:
            unknown.append(key)
    if unknown and all(k.startswith(('backbone.', 'neck.', 'tokenizer.', 'data_preprocessor.'))
                       for k in unknown):
        raise CheckpointError(
            'this is already an addp_mm checkpoint (its keys are in addp_mm\'s backbone./neck./'
            'tokenizer. layout); use it as it is (load_from, tools/test.py, tools/sample.py), no '
            'conversion is needed.')
    if unknown:
        raise CheckpointError(
            f'{len(unknown)} unknown key(s) in the ADDP checkpoint, e.g. {unknown[:5]}; '
            'is it an official ADDP pretraining release (addp-vit-{base,large}-16.pth)?')
    if not any(k.startswith('backbone.blocks.') for k in converted):
        raise CheckpointError('no ADDP encoder weights (blocks.*) found: this is not an ADDP '
                              'pretraining checkpoint.')

    # frozen VQGAN, stored once under vqgan.*
    vq_keys = {k: v for k, v in state_dict.items() if k.startswith(VQGAN_PREFIX)}
    if not vq_keys:
        raise CheckpointError('the checkpoint has no vqgan.* keys (the frozen tokenizer).')
    vq, vq_dropped, _ = convert_vqgan_state_dict(vq_keys, prefix=VQGAN_PREFIX)
    for k in vq_dropped:
        dropped[k] = 'documented-unused VQGAN training-loss weight'
    converted.update({'tokenizer.' + k: v for k, v in vq.items()})

    # token_predictor.vqgan.* must be exact aliases of vqgan.*
    aliases = [k for k in state_dict if k.startswith(ALIAS_PREFIX)]
    bad = []
    for k in aliases:
        twin = VQGAN_PREFIX + k[len(ALIAS_PREFIX):]
        if twin not in state_dict or state_dict[twin].shape != state_dict[k].shape \
                or not torch.equal(state_dict[twin], state_dict[k]):
            bad.append(k)
        else:
            dropped[k] = f'alias of {twin} (same module, checked equal)'
    if bad:
        raise CheckpointError(
            f'{len(bad)} token_predictor.vqgan.* tensor(s) differ from (or lack) their vqgan.* '
            f'twin, e.g. {bad[:5]}; the official file stores one shared VQGAN, so the file is '
            'inconsistent.')

    # frozen MAGE token predictor
    tp_keys = {k: v for k, v in state_dict.items()
               if k.startswith(PREDICTOR_PREFIX) and not k.startswith(ALIAS_PREFIX)}
    if not tp_keys:
        raise CheckpointError('the checkpoint has no token_predictor.* keys.')
    tp, tp_dropped, _ = convert_mage_state_dict(tp_keys, prefix=PREDICTOR_PREFIX)
    for k in tp_dropped:
        dropped[k] = 'documented-unused token-predictor parameter (pixel path / sin-cos tables)'
    converted.update({PREDICTOR_PREFIX + k: v for k, v in tp.items()})

    missing = set(state_dict) - set(dropped) - _sources(converted, state_dict)
    if missing:  # pragma: no cover - defensive: every branch above accounts for its keys
        raise CheckpointError(f'keys not accounted for: {sorted(missing)[:5]}')
    return converted, dropped


def _sources(converted: Mapping[str, Tensor], state_dict: Mapping[str, Tensor]) -> set:
    """Official names of the converted keys (for the accounting check)."""
    out = set()
    for k in converted:
        if k.startswith(('backbone.', 'neck.')):
            out.add(k.split('.', 1)[1])
        elif k.startswith('tokenizer.'):
            out.add(VQGAN_PREFIX + k[len('tokenizer.'):])
        else:
            out.add(k)
    return out & set(state_dict)


def convert(src: str) -> Tuple[Dict[str, Tensor], Dict[str, object]]:
    """Read ``src`` (weights_only) and convert it; return ``(state_dict, meta)``."""
    state_dict = load_external_state_dict(src, keys=('model', ), reject_converted=True)
    converted, dropped = convert_addp_state_dict(state_dict)
    meta = dict(converted_from=osp.basename(src), converter='tools/model_converters/addp_to_mm.py',
                num_source_keys=len(state_dict), num_loaded=len(converted),
                dropped=sorted(dropped), dropped_reasons=dict(sorted(dropped.items())))
    return converted, meta


def convert_file(src: str, dst: str, config: Optional[str] = None,
                 fmt: Optional[str] = None) -> Dict[str, object]:
    """Convert ``src``, check it against ``config`` if given, then write ``dst``.

    ``dst`` is checked before the work and written atomically (``.pth``, or
    ``.safetensors`` with ``fmt='safetensors'`` or that extension), only after
    every check passed; on any error nothing is left at ``dst``.
    """
    fmt = resolve_format(dst, fmt)
    check_output_file(dst, 'destination')
    converted, meta = convert(src)
    if config:
        check_against_config(converted, config)
    save_converted(converted, meta, dst, fmt)
    return meta


def check_against_config(dst_state_dict: Mapping[str, Tensor], config: str) -> None:
    """Build ``config``'s model on the meta device and check keys/shapes."""
    from mmengine.config import Config
    from mmpretrain.registry import MODELS

    import addp_mm  # noqa: F401
    from addp_mm.utils.checkpoint import check_state_dict
    cfg = Config.fromfile(config)
    model_cfg = cfg.model.copy()
    model_cfg.require_frozen_checkpoints = False
    model_cfg.tokenizer.checkpoint = None
    model_cfg.token_predictor.checkpoint = None
    with torch.device('meta'):
        model = MODELS.build(model_cfg)
    check_state_dict(model, dst_state_dict, source='converted checkpoint')


def main() -> None:
    parser = argparse.ArgumentParser(description='Convert an official ADDP release to addp_mm.')
    parser.add_argument('src', help='official addp-vit-{base,large}-16.pth')
    parser.add_argument('dst', help='output path of the addp_mm checkpoint')
    parser.add_argument('--config', help='also check keys/shapes against this config\'s model')
    parser.add_argument('--format', choices=FORMATS, default=None,
                        help='output format (default: from the extension of DST, else pth)')
    args = parser.parse_args()
    if args.config and not osp.isfile(args.config):
        raise SystemExit(f'error: config file not found: {args.config!r}')
    try:
        meta = convert_file(args.src, args.dst, args.config, args.format)
    except (CheckpointError, OutputError) as err:
        raise SystemExit(f'error: {err}')
    print(f'converted {meta["num_source_keys"]} keys: {meta["num_loaded"]} loaded, '
          f'{len(meta["dropped"])} dropped as documented-unused/aliases -> {args.dst}')


if __name__ == '__main__':
    main()
