"""Extract ADDP encoder weights from any supported checkpoint format.

Supported inputs (all read with ``weights_only=True``, see
:mod:`addp_mm.utils.checkpoint`):

* an addp_mm checkpoint (Runner output or converted official release):
  ``{'state_dict': {'backbone.<timm-name>': ...}}``;
* an official ADDP release ``{'model': {...}}`` (unprefixed timm names plus
  ``vqgan.*``/``token_predictor.*``);
* an official fine-tuning ViT state dict (timm names, no ``tokenizer_norm``).

The result always uses the timm names of the pretraining encoder:
``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``tokenizer_norm.*``
(when present), ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``
and ``norm.*`` (when present).
"""
import re
from typing import Dict, Mapping

from torch import Tensor

from addp_mm.utils.checkpoint import CheckpointError, load_external_state_dict

_ENCODER_KEY = re.compile(
    r'^(cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|tokenizer_norm\.(weight|bias)|'
    r'norm\.(weight|bias)|blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.'
    r'(weight|bias))$')


def encoder_state_dict_from(state_dict: Mapping[str, Tensor], source: str = 'checkpoint'
                            ) -> Dict[str, Tensor]:
    """Pick the ADDP encoder entries of an already loaded state dict."""
    sd = dict(state_dict)
    if any(k.startswith('backbone.') for k in sd):
        sd = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    enc = {k: v for k, v in sd.items() if _ENCODER_KEY.match(k)}
    if 'pos_embed' not in enc or not any(k.startswith('blocks.') for k in enc):
        raise CheckpointError(
            f'{source} holds no ADDP encoder weights (expected `pos_embed`, `patch_embed.proj.*` '
            'and `blocks.*`, optionally under `backbone.`). Is it a classification head or a '
            'tokenizer/predictor file? Convert official releases with '
            'tools/model_converters/addp_to_mm.py.')
    return enc


def load_addp_encoder_state_dict(path: str) -> Dict[str, Tensor]:
    """Load ``path`` and return its ADDP encoder weights in timm naming."""
    return encoder_state_dict_from(load_external_state_dict(path), source=repr(path))


def timm_vit_to_mmpretrain(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Rename timm ViT keys to mmpretrain ``VisionTransformer`` keys.

    ``blocks.i.norm1`` → ``layers.i.ln1``, ``mlp.fc1`` → ``ffn.layers.0.0``,
    ``mlp.fc2`` → ``ffn.layers.1``, ``patch_embed.proj`` →
    ``patch_embed.projection``, ``norm`` → ``ln1``. ``tokenizer_norm`` is mapped to
    ``pre_norm`` (mmpretrain's name for a LayerNorm before the first block).
    """
    out = {}
    for k, v in state_dict.items():
        nk = k
        if nk.startswith('blocks.'):
            nk = 'layers.' + nk[len('blocks.'):]
            nk = (nk.replace('.norm1.', '.ln1.').replace('.norm2.', '.ln2.')
                  .replace('.mlp.fc1.', '.ffn.layers.0.0.').replace('.mlp.fc2.', '.ffn.layers.1.'))
        elif nk.startswith('patch_embed.proj.'):
            nk = 'patch_embed.projection.' + nk[len('patch_embed.proj.'):]
        elif nk.startswith('norm.'):
            nk = 'ln1.' + nk[len('norm.'):]
        elif nk.startswith('tokenizer_norm.'):
            nk = 'pre_norm.' + nk[len('tokenizer_norm.'):]
        out[nk] = v
    return out
