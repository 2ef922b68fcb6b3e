"""Export an ADDP encoder as a timm ``VisionTransformer`` (``.safetensors`` or ``.pth``).

Input (read with ``weights_only=True`` through the project's safe loader):

* an official ADDP release (``{'model': {...}}``, timm names) or the file
  ``tools/model_converters/addp_to_mm.py`` makes of it;
* a project checkpoint of the ADDP pretraining model (``backbone.*`` =
  :class:`~addp_mm.models.backbones.ADDPPretrainEncoder`);
* a project checkpoint of a transfer model whose backbone is
  :class:`~addp_mm.models.backbones.ADDPVisionTransformer` (mmpretrain names).

Output: a flat timm state dict that ``timm``'s ``VisionTransformer`` loads
strictly, plus ``<dst stem>.timm.json`` with the model name and the keyword
arguments to build it (also printed). Mapping:

===========================  =================================================
ADDP encoder                 timm ``VisionTransformer``
===========================  =================================================
``patch_embed.proj.*``       ``patch_embed.proj.*``; with ``tokenizer_norm``
                             the conv bias is added to ``pos_embed[:, 1:]``
                             (timm's ``pre_norm`` conv has no bias; exact,
                             also under pos-embed resampling)
``cls_token``, ``pos_embed`` same names (cls row 0, ``class_token=True``)
``tokenizer_norm.*``         ``norm_pre.*`` (``pre_norm=True``)
``blocks.*``                 same names (``layers.*`` of a transfer backbone
                             are renamed)
``norm.*``                   ``norm.*``; absent -> ``final_norm=False``
fc_norm (transfer ``ln2``)   ``fc_norm.*`` (``fc_norm=True``)
===========================  =================================================

Everything else has no timm counterpart and is dropped, with a count per part
in the printed summary and the JSON: the ADDP decoder (``neck.*``: token
embedding, mask token, decoder blocks, MLM head), the frozen VQGAN tokenizer,
the frozen token predictor, and heads/necks of transfer models. Dropout rates
are not exported (inference model). The encoder expects RGB in [0, 1]
normalised with the ImageNet mean/std; the build arguments carry them in
``pretrained_cfg_overlay`` so ``timm.data.resolve_data_config`` finds them.

Usage::

    python tools/model_converters/addp_to_timm.py checkpoints/addp-vit-base-16_mm.pth \\
        checkpoints/addp-vit-base-16_timm.safetensors [--format pth] [--num-heads 12]
"""
import argparse
import json
import os.path as osp
import re
import sys
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from addp_mm.utils.checkpoint import CheckpointError, load_external_state_dict  # noqa: E402
from addp_mm.utils.checkpoint_writer import save_safetensors  # noqa: E402
from addp_mm.utils.outputs import (OutputError, atomic_torch_save, atomic_write,  # noqa: E402
                                   check_output_file)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FORMATS = {'.safetensors': 'safetensors', '.pth': 'pth', '.pt': 'pth', '.bin': 'pth'}
#: timm's standard ViT sizes: width -> (family, depth, heads)
STANDARD_VITS = {192: ('vit_tiny', 12, 3), 384: ('vit_small', 12, 6), 768: ('vit_base', 12, 12),
                 1024: ('vit_large', 24, 16), 1280: ('vit_huge', 32, 16)}
#: parts of a checkpoint that are not the encoder: top-level name -> what it is
DROPPED_PARTS = {
    'neck': 'ADDP decoder (token embedding, mask token, decoder blocks, MLM head) or a '
            'transfer neck',
    'decoder': 'ADDP decoder (token embedding, mask token, decoder blocks, MLM head)',
    'tokenizer': 'frozen VQGAN tokenizer', 'vqgan': 'frozen VQGAN tokenizer',
    'token_predictor': 'frozen MAGE token predictor', 'head': 'classification / loss head',
    'unused': 'parameters the official release allocates but never reads'}
_OFFICIAL_DECODER = ('decoder_embed', 'mask_token', 'decoder_pos_embed_learned',
                     'decoder_pos_mask_embed', 'decoder_pos_token_embed', 'decoder_blocks',
                     'decoder_norm', 'token_emb', 'mlm_layer')
_OFFICIAL_UNUSED = ('decoder_pos_embed', 'pos_token_embed', 'pos_mask_embed', 'decoder_pred')
_TIMM_ENCODER_KEY = re.compile(
    r'^(cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|tokenizer_norm\.(weight|bias)|'
    r'norm\.(weight|bias)|fc_norm\.(weight|bias)|blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|'
    r'mlp\.fc1|mlp\.fc2)\.(weight|bias))$')
_MMPRETRAIN_RENAMES = ((r'^layers\.(\d+)\.ln1\.', r'blocks.\1.norm1.'),
                       (r'^layers\.(\d+)\.ln2\.', r'blocks.\1.norm2.'),
                       (r'^layers\.(\d+)\.attn\.', r'blocks.\1.attn.'),
                       (r'^layers\.(\d+)\.ffn\.layers\.0\.0\.', r'blocks.\1.mlp.fc1.'),
                       (r'^layers\.(\d+)\.ffn\.layers\.1\.', r'blocks.\1.mlp.fc2.'),
                       (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
                       (r'^pre_norm\.', 'tokenizer_norm.'), (r'^ln1\.', 'norm.'),
                       (r'^ln2\.', 'fc_norm.'))


class ExportError(ValueError):
    """The input cannot be exported to timm (one line naming the problem and the fix)."""


# ------------------------------------------------------------------ reading
def _part_of(key: str) -> str:
    head = key.split('.', 1)[0]
    if head in _OFFICIAL_DECODER:
        return 'decoder'
    if head in _OFFICIAL_UNUSED:
        return 'unused'
    return head


def split_encoder(state_dict: Mapping[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, int]]:
    """The encoder in ADDP's timm-style names, and the count of dropped keys per part.

    Raises:
        ExportError: No encoder, or encoder keys with no timm counterpart.
    """
    if any(k.startswith('backbone.') for k in state_dict):
        backbone = {k[len('backbone.'):]: v for k, v in state_dict.items()
                    if k.startswith('backbone.')}
        rest = [k for k in state_dict if not k.startswith('backbone.')]
    else:  # official release: encoder keys at the top level
        backbone = {k: v for k, v in state_dict.items() if _TIMM_ENCODER_KEY.match(k)}
        rest = [k for k in state_dict if k not in backbone]
    dropped: Dict[str, int] = {}
    for k in rest:
        dropped[_part_of(k)] = dropped.get(_part_of(k), 0) + 1
    if any(k.startswith('layers.') for k in backbone):  # mmpretrain names (transfer backbone)
        renamed = {}
        for k, v in backbone.items():
            for pattern, repl in _MMPRETRAIN_RENAMES:
                k = re.sub(pattern, repl, k)
            renamed[k] = v
        backbone = renamed
    foreign = sorted(k for k in backbone if not _TIMM_ENCODER_KEY.match(k))
    if foreign:
        raise ExportError(
            f'{len(foreign)} encoder key(s) have no timm VisionTransformer counterpart, e.g. '
            f'{foreign[:3]} (a ViTDet backbone with window / relative-position attention, or '
            'layer scale?); export a pretraining checkpoint or a plain ViT transfer checkpoint.')
    if 'pos_embed' not in backbone or not any(k.startswith('blocks.') for k in backbone):
        raise ExportError('the file holds no ADDP encoder (pos_embed, patch_embed.proj.*, '
                          'blocks.*): give an ADDP pretraining/transfer checkpoint or an '
                          'official ADDP release.')
    return backbone, dropped


# -------------------------------------------------------------- conversion
def _num_heads(width: int, num_heads: Optional[int]) -> int:
    if num_heads is None:
        if width not in STANDARD_VITS:
            raise ExportError(f'cannot tell the number of attention heads of a {width}-wide '
                              'encoder from its weights; pass --num-heads (the backbone '
                              'num_heads of its config).')
        num_heads = STANDARD_VITS[width][2]
    if width % num_heads:
        raise ExportError(f'--num-heads {num_heads} does not divide the width {width}')
    return num_heads


def _grid(pos_embed: Tensor, img_size: Optional[Tuple[int, int]], patch: int) -> Tuple[int, int]:
    rows = pos_embed.shape[1] - 1
    if img_size is not None:
        grid = (img_size[0] // patch, img_size[1] // patch)
        if grid[0] * grid[1] != rows:
            raise ExportError(f'--img-size {img_size} gives a {grid} grid but pos_embed has '
                              f'{rows} patch rows')
        return grid
    side = int(round(rows ** 0.5))
    if side * side != rows:
        raise ExportError(f'pos_embed has {rows} patch rows (not a square grid); pass '
                          '--img-size H W')
    return side, side


def to_timm(encoder: Mapping[str, Tensor], num_heads: Optional[int] = None,
            img_size: Optional[Tuple[int, int]] = None) -> Tuple[Dict[str, Tensor], dict]:
    """Convert the encoder (ADDP timm-style names) to a timm state dict.

    Returns:
        tuple: ``(timm state dict, VisionTransformer keyword arguments)``.
    """
    width = encoder['pos_embed'].shape[-1]
    depth = 1 + max(int(k.split('.')[1]) for k in encoder if k.startswith('blocks.'))
    patch_w = encoder['patch_embed.proj.weight']
    patch = int(patch_w.shape[-1])
    grid = _grid(encoder['pos_embed'], img_size, patch)
    pre_norm = 'tokenizer_norm.weight' in encoder
    fc_norm = 'fc_norm.weight' in encoder
    final_norm = 'norm.weight' in encoder
    if fc_norm and final_norm:
        raise ExportError('the encoder has both a final norm and an fc_norm (final_norm=True '
                          "with out_type='avg_featmap'); timm applies one of them only.")
    out, storages = {}, set()
    for k, v in encoder.items():
        if k == 'patch_embed.proj.bias' and pre_norm:
            continue  # folded into pos_embed below
        name = 'norm_pre.' + k.split('.', 1)[1] if k.startswith('tokenizer_norm.') else k
        v = v.detach()
        ptr = v.untyped_storage().data_ptr()
        # safetensors stores each tensor on its own: copy views and shared storages only
        out[name] = v.clone() if not v.is_contiguous() or ptr in storages else v
        storages.add(ptr)
    if pre_norm and 'patch_embed.proj.bias' in encoder:
        pos = out['pos_embed'].clone()
        pos[:, 1:] += encoder['patch_embed.proj.bias'].to(pos.dtype)
        out['pos_embed'] = pos
    size = [grid[0] * patch, grid[1] * patch]
    kwargs = dict(img_size=size[0] if size[0] == size[1] else size, patch_size=patch,
                  embed_dim=width, depth=depth, num_heads=_num_heads(width, num_heads),
                  mlp_ratio=encoder['blocks.0.mlp.fc1.weight'].shape[0] / width, qkv_bias=True,
                  class_token=True, global_pool='avg', pre_norm=pre_norm, fc_norm=fc_norm,
                  num_classes=0)
    if not final_norm and not fc_norm:
        kwargs['final_norm'] = False
    if not pre_norm and 'patch_embed.proj.bias' not in encoder:
        raise ExportError('the encoder has neither a patch-embedding bias nor tokenizer_norm; '
                          'timm cannot express that combination.')
    return out, kwargs


def _pair(size) -> List[int]:
    return [size, size] if isinstance(size, int) else list(size)


def timm_recipe(kwargs: dict) -> dict:
    """The timm model name and the arguments to give ``timm.create_model``."""
    import timm
    std = STANDARD_VITS.get(kwargs['embed_dim'])
    name = None
    if std and std[1:] == (kwargs['depth'], kwargs['num_heads']) and kwargs['mlp_ratio'] == 4:
        cand = f'{std[0]}_patch{kwargs["patch_size"]}_224'
        name = cand if timm.is_model(cand) else None
    create = dict(kwargs)
    if name:  # the name already sets these
        for key in ('patch_size', 'embed_dim', 'depth', 'num_heads', 'mlp_ratio'):
            create.pop(key)
    create['pretrained_cfg_overlay'] = dict(
        mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
        input_size=[3, *_pair(kwargs['img_size'])],
        num_classes=0)
    code = (f'timm.create_model({name!r}, pretrained=False, ' if name else
            'timm.models.vision_transformer.VisionTransformer(')
    shown = create if name else kwargs  # VisionTransformer itself takes no pretrained_cfg
    code += ', '.join(f'{k}={v!r}' for k, v in shown.items())
    code += ')'
    return dict(model_name=name, create_model_kwargs=create, vision_transformer_kwargs=kwargs,
                python=code)


# ------------------------------------------------------------------ writing
def resolve_format(dst: str, fmt: Optional[str]) -> str:
    """The output format from ``--format`` and the file extension (which must agree)."""
    by_ext = FORMATS.get(osp.splitext(dst)[1].lower())
    if fmt is None:
        return by_ext or 'safetensors'
    if by_ext is not None and by_ext != fmt:
        raise ExportError(f'--format {fmt} does not match the extension of {dst!r}; use a '
                          f'{"." + fmt} name or drop --format')
    return fmt


def sidecar_path(dst: str) -> str:
    """``<dst without extension>.timm.json``."""
    return osp.splitext(dst)[0] + '.timm.json'


def export(src: str, dst: str, fmt: Optional[str] = None, num_heads: Optional[int] = None,
           img_size: Optional[Tuple[int, int]] = None) -> dict:
    """Read ``src``, convert its encoder, write ``dst`` and the JSON beside it.

    Returns:
        dict: The summary written to the JSON (recipe, dropped parts, paths).
    """
    fmt = resolve_format(dst, fmt)
    check_output_file(dst, 'destination')
    check_output_file(sidecar_path(dst), 'JSON beside the destination')
    state_dict = load_external_state_dict(src, keys=('state_dict', 'model'))
    encoder, dropped = split_encoder(state_dict)
    timm_sd, kwargs = to_timm(encoder, num_heads, img_size)
    recipe = timm_recipe(kwargs)
    summary = dict(recipe, source=osp.basename(src), format=fmt, file=osp.basename(dst),
                   num_tensors=len(timm_sd),
                   dropped={part: dict(keys=n, what=DROPPED_PARTS.get(part, 'not the encoder'))
                            for part, n in sorted(dropped.items())},
                   exporter='tools/model_converters/addp_to_timm.py')
    if fmt == 'safetensors':
        save_safetensors(timm_sd, dst, dict(format='pt', timm_model=str(
            recipe['model_name']), timm_kwargs=json.dumps(kwargs)))
    else:
        atomic_torch_save(timm_sd, dst)
    with atomic_write(sidecar_path(dst), 'w') as f:
        json.dump(summary, f, indent=2)
        f.write('\n')
    return summary


def describe(summary: dict, dst: str) -> List[str]:
    """The printed summary lines."""
    lines = [f'wrote {summary["num_tensors"]} tensors ({summary["format"]}) -> {dst}',
             f'timm model: {summary["model_name"] or "VisionTransformer (no registered name)"}',
             f'build it with: {summary["python"]}',
             'inputs: RGB in [0, 1] normalised with the ImageNet mean/std; features = '
             'model.forward_features(x), pooled (mean of patch tokens) = model(x)']
    for part, info in summary['dropped'].items():
        n = info['keys']
        lines.append(f'dropped {part}.* ({n} key{"" if n == 1 else "s"}): {info["what"]} - no '
                     'timm counterpart')
    lines.append(f'recipe: {sidecar_path(dst)}')
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description='Export an ADDP encoder as a timm ViT.')
    parser.add_argument('src', help='ADDP checkpoint (official, converted, pretraining or '
                        'transfer)')
    parser.add_argument('dst', help='output file (.safetensors or .pth)')
    parser.add_argument('--format', choices=('safetensors', 'pth'), default=None,
                        help='output format (default: from the extension, else safetensors)')
    parser.add_argument('--num-heads', type=int, default=None,
                        help='attention heads (needed for non-standard widths)')
    parser.add_argument('--img-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='input size of a non-square pos-embed grid')
    args = parser.parse_args(argv)
    try:
        summary = export(args.src, args.dst, args.format, args.num_heads,
                         tuple(args.img_size) if args.img_size else None)
    except (CheckpointError, OutputError, ExportError) as err:
        raise SystemExit(f'error: {str(err).splitlines()[0]}') from None
    print('\n'.join(describe(summary, args.dst)))


if __name__ == '__main__':
    main()
