"""Load ADDP encoder weights from every supported checkpoint format.

One reader and one key accounting for every ADDP encoder
(:class:`~addp_mm.models.backbones.ADDPVisionTransformer` for classification
and segmentation, :class:`~addp_mm.models.backbones.ADDPViTDetBackbone` for
detection), whichever way the weights are given (``pretrained=``,
``init_cfg=dict(type='Pretrained', ...)`` or a list holding such an entry).

Supported files (all read with ``weights_only=True`` by
:func:`addp_mm.utils.checkpoint.load_external_state_dict`):

* an addp_mm checkpoint (Runner output or converted official release):
  ``{'state_dict': {'backbone.<timm-name>': ...}}``;
* an official ADDP pretraining release ``{'model': {...}}`` (unprefixed timm
  names plus ``vqgan.*``/``token_predictor.*``, reference ``models_addp.py``);
* an official fine-tuning state dict (timm names, no ``tokenizer_norm``/``norm``,
  reference ``models_vit.py``).

The encoder entries use the timm names of the pretraining encoder:
``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``tokenizer_norm.*``
(when present), ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``
and ``norm.*`` (when present). Every key of the file ends up in the report:
loaded, deliberately ignored (with the reason) or not encoder weights
(counted per top-level name); every model key is loaded or a documented fresh
parameter.
"""
import math
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from mmengine.logging import MMLogger
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor, nn

from addp_mm.utils.checkpoint import (CheckpointError, load_external_state_dict,
                                      load_state_dict_strict)

_ENCODER_KEY = re.compile(
    r'^(cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|tokenizer_norm\.(weight|bias)|'
    r'norm\.(weight|bias)|blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.'
    r'(weight|bias))$')
_BLOCK_KEY = re.compile(r'^blocks\.(\d+)\.')
_PRETRAINED_KEYS = {'type', 'checkpoint', 'prefix', 'map_location'}


def split_pretrained_init_cfg(init_cfg: Union[dict, List[dict], None]
                              ) -> Tuple[Optional[dict], Union[dict, List[dict], None]]:
    """Take the ``type='Pretrained'`` entry out of an ``init_cfg`` (dict or list).

    Returns:
        tuple: ``(pretrained_cfg or None, remaining init_cfg)``.
    """
    if init_cfg is None:
        return None, None
    cfgs = [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg)
    pretrained = [c for c in cfgs if c.get('type') == 'Pretrained']
    rest = [c for c in cfgs if c.get('type') != 'Pretrained']
    if len(pretrained) > 1:
        raise ValueError('init_cfg holds more than one `Pretrained` entry; keep one.')
    rest_cfg: Union[dict, List[dict], None] = rest if rest else None
    if isinstance(init_cfg, dict) and rest_cfg is not None:
        rest_cfg = rest_cfg[0]
    return (dict(pretrained[0]) if pretrained else None), rest_cfg


def resolve_pretrained(pretrained: Optional[str], init_cfg: Union[dict, List[dict], None],
                       owner: str) -> Tuple[Optional[str], Optional[str],
                                            Union[dict, List[dict], None]]:
    """Route ``pretrained=`` or a ``Pretrained`` init_cfg entry to the encoder loader.

    mmengine's ``PretrainedInit`` (which unpickles freely and accounts for no
    key) never sees the entry.

    Args:
        pretrained (str, optional): Checkpoint given as ``pretrained=``.
        init_cfg (dict | list[dict], optional): The module's init config.
        owner (str): Class name, for messages.

    Returns:
        tuple: ``(checkpoint path or None, key prefix or None, init_cfg
        without the Pretrained entry)``.
    """
    pretrained_cfg, rest = split_pretrained_init_cfg(init_cfg)
    if pretrained_cfg is None:
        return pretrained, None, rest
    if pretrained is not None:
        raise ValueError('give the checkpoint either as `pretrained=` or as '
                         "init_cfg=dict(type='Pretrained', ...), not both.")
    unknown = set(pretrained_cfg) - _PRETRAINED_KEYS
    if unknown:
        raise ValueError(f'unsupported keys {sorted(unknown)} in the Pretrained init_cfg '
                         f'of {owner} (supported: checkpoint, prefix).')
    return pretrained_cfg.get('checkpoint'), pretrained_cfg.get('prefix'), rest


def encoder_state_dict_from(state_dict: Mapping[str, Tensor], source: str = 'checkpoint'
                            ) -> Dict[str, Tensor]:
    """Pick the ADDP encoder entries (timm names) of an already loaded state dict."""
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
    """Load ``path`` (a URL is downloaded) and return its ADDP encoder weights in timm naming."""
    return encoder_state_dict_from(load_external_state_dict(path), source=_source(path))


def _source(path: str) -> str:
    """How messages name ``path``; a remote name says where it may come from."""
    from addp_mm.utils.downloads import is_remote
    if is_remote(path):
        return (f"{path!r} (a remote name: if it comes from a base config, e.g. mmseg's "
                'model.pretrained for a ResNet, set it to None)')
    return repr(path)


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


@dataclass
class EncoderLayout:
    """What an encoder expects from a checkpoint.

    Args:
        embed_dims (int): Token width.
        num_layers (int): Number of blocks.
        patch_size (tuple[int, int]): Patch size.
        grid (tuple[int, int]): Grid of the model's position table.
        cls_token (bool): The model has a cls token (and a cls row in its
            position table).
        tokenizer_norm (bool): The model applies the pretraining
            ``tokenizer_norm``; False drops it (reference fine-tuning).
        final_norm (bool): The model applies the pretraining final ``norm``;
            False drops it.
        fresh (Callable[[str], bool]): Model keys that never come from an
            encoder checkpoint (e.g. ``fc_norm``, relative position tables).
        rename (Callable, optional): Maps the timm-named entries to the model's
            key names. Defaults to None (timm names).
        pretrained_grid (tuple[int, int], optional): Grid of the checkpoint's
            position table, needed only for a non-square grid. Defaults to
            None (inferred).
        interpolate_mode (str): Position-table resize mode. Defaults to
            ``'bicubic'``.
        fresh_reason (str): Said in the log about the fresh keys.
        no_cls_reason (str): Why a checkpoint ``cls_token`` is not used when
            ``cls_token`` is False.
    """
    embed_dims: int
    num_layers: int
    patch_size: Tuple[int, int]
    grid: Tuple[int, int]
    cls_token: bool
    tokenizer_norm: bool
    final_norm: bool
    fresh: Callable[[str], bool]
    rename: Optional[Callable[[Mapping[str, Tensor]], Dict[str, Tensor]]] = None
    pretrained_grid: Optional[Sequence[int]] = None
    interpolate_mode: str = 'bicubic'
    fresh_reason: str = 'not part of ADDP checkpoints'
    no_cls_reason: str = 'with_cls_token=False (its pos-embed row is dropped too)'


def check_encoder_geometry(enc: Mapping[str, Tensor], layout: EncoderLayout, owner: str,
                           source: str) -> None:
    """Width, depth and patch size of the file against the model, with the fix."""
    C = layout.embed_dims
    ck_dim = enc['pos_embed'].shape[-1]
    if ck_dim != C or ('patch_embed.proj.weight' in enc
                       and enc['patch_embed.proj.weight'].shape[0] != C):
        raise CheckpointError(
            f'{source} has embed dim {ck_dim} (pos_embed {tuple(enc["pos_embed"].shape)}) but '
            f'{owner} is configured with embed_dims={C}. Use the arch that matches the '
            "checkpoint (ADDP ViT-B: arch='b', 768; ViT-L: arch='l', 1024).")
    depth = 1 + max((int(m.group(1)) for m in map(_BLOCK_KEY.match, enc) if m), default=-1)
    if depth != layout.num_layers:
        raise CheckpointError(
            f'{source} has {depth} transformer blocks but {owner} is configured with '
            f'num_layers={layout.num_layers}. Use the arch that matches the checkpoint.')
    pw = enc.get('patch_embed.proj.weight')
    if pw is not None and tuple(pw.shape[-2:]) != tuple(layout.patch_size):
        raise CheckpointError(
            f'{source} uses patch size {tuple(pw.shape[-2:])}, the backbone patch_size='
            f'{tuple(layout.patch_size)}.')


def checkpoint_pos_grid(pos_embed: Tensor, has_cls_row: bool, source: str,
                        pretrained_grid: Optional[Sequence[int]] = None,
                        model_grid: Optional[Sequence[int]] = None) -> Tuple[int, int]:
    """The ``(rows, cols)`` grid of a checkpoint position table ``[1, (1+)h*w, C]``.

    Square grids are inferred; a non-square one needs ``pretrained_grid``.
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise CheckpointError(f'pos_embed of {source} has shape {tuple(pos_embed.shape)}; '
                              'expected [1, tokens, channels].')
    num_patches = pos_embed.shape[1] - int(has_cls_row)
    cls_note = ' (+ 1 cls)' if has_cls_row else ''
    if pretrained_grid is not None:
        src = (int(pretrained_grid[0]), int(pretrained_grid[1]))
        if src[0] * src[1] != num_patches:
            raise CheckpointError(
                f'pretrained_patch_resolution={src} gives {src[0] * src[1]} positions but the '
                f'pos_embed of {source} has {num_patches}{cls_note}; fix '
                'pretrained_patch_resolution.')
        return src
    side = math.isqrt(max(num_patches, 0))
    if side * side != num_patches or num_patches == 0:
        grid_note = f' (model grid {tuple(model_grid)})' if model_grid is not None else ''
        raise CheckpointError(
            f'cannot resize the pos_embed of {source}: its {num_patches} patch positions'
            f'{cls_note} do not form a square grid, so the (rows, cols) layout is unknown. Pass '
            '`pretrained_patch_resolution=(rows, cols)` to the backbone, or use the '
            f'pretraining input size{grid_note}.')
    return side, side


def fit_pos_embed(pos_embed: Tensor, has_cls_row: bool, layout: EncoderLayout,
                  source: str) -> Tensor:
    """Drop or keep the cls row and resize the grid to the model's table."""
    src_grid = checkpoint_pos_grid(pos_embed, has_cls_row, source, layout.pretrained_grid,
                                   layout.grid)
    if has_cls_row and not layout.cls_token:
        pos_embed = pos_embed[:, 1:]  # the model has no cls token
    elif layout.cls_token and not has_cls_row:
        raise CheckpointError(f'{source}: pos_embed has no cls row but the backbone uses a '
                              'cls token')
    if src_grid == tuple(layout.grid):
        return pos_embed
    MMLogger.get_current_instance().info(
        f'resize pos_embed of {source} from grid {src_grid} to {tuple(layout.grid)} '
        f'({layout.interpolate_mode}).')
    return resize_pos_embed(pos_embed.float(), src_grid, tuple(layout.grid),
                            layout.interpolate_mode,
                            int(layout.cls_token)).to(pos_embed.dtype)


def load_encoder_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor],
                            layout: EncoderLayout, source: str = 'checkpoint',
                            prefix: Optional[str] = None) -> Dict[str, object]:
    """Load the ADDP encoder of an already read state dict into ``model``.

    Args:
        model (nn.Module): The encoder.
        state_dict (Mapping[str, Tensor]): The file's flat state dict.
        layout (EncoderLayout): What the encoder expects.
        source (str): Name of the file, for messages. Defaults to 'checkpoint'.
        prefix (str, optional): Key prefix to select, e.g. ``'backbone.'``
            (recognised automatically). Defaults to None.

    Returns:
        dict: ``loaded`` (model key names), ``ignored`` (``(timm name,
        reason)`` of encoder entries deliberately not used), ``not_encoder``
        (count of the file's other keys per top-level name) and ``fresh``
        (model keys not taken from the file).

    Raises:
        CheckpointError: No encoder weights, a norm requested by the options is
            missing, width / depth / patch size / keys / shapes do not match,
            or the position table cannot be resized.
    """
    owner = type(model).__name__
    raw = dict(state_dict)
    if prefix and prefix != 'backbone.':
        if not any(k.startswith(prefix) for k in raw):
            raise CheckpointError(f'no key of {source} starts with prefix {prefix!r}.')
        raw = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
    enc = encoder_state_dict_from(raw, source=source)
    encoder_names = set(enc)
    check_encoder_geometry(enc, layout, owner, source)

    ignored: List[Tuple[str, str]] = []
    for name, wanted, option in (('tokenizer_norm', layout.tokenizer_norm, 'use_tokenizer_norm'),
                                 ('norm', layout.final_norm, 'final_norm')):
        if not wanted:
            for k in [k for k in enc if k.startswith(name + '.')]:
                enc.pop(k)
                ignored.append((k, f'{option}=False (reference fine-tuning drops it)'))
        elif name + '.weight' not in enc:
            raise CheckpointError(
                f'{source} has no `{name}.*` (e.g. it is a fine-tuned model), but '
                f'{option}=True asks for it. Set {option}=False.')
    has_cls_row = 'cls_token' in enc  # ADDP encoders keep a cls row with their cls token
    if not layout.cls_token and has_cls_row:
        enc.pop('cls_token')
        ignored.append(('cls_token', layout.no_cls_reason))
    enc['pos_embed'] = fit_pos_embed(enc['pos_embed'], has_cls_row, layout, source)

    sd = layout.rename(enc) if layout.rename is not None else enc
    own = model.state_dict()
    fresh = [k for k in own if k not in sd and layout.fresh(k)]
    # fresh parameters keep their initial values; the strict check then
    # catches any other missing, surplus or mis-shaped key
    load_state_dict_strict(model, {**sd, **{k: own[k] for k in fresh}}, source)

    not_encoder: Dict[str, int] = {}
    for k in raw:
        if k in encoder_names or (k.startswith('backbone.')
                                  and k[len('backbone.'):] in encoder_names):
            continue
        parts = k.split('.')
        top = 'backbone.' + parts[1] if parts[0] == 'backbone' and len(parts) > 1 else parts[0]
        not_encoder[top] = not_encoder.get(top, 0) + 1
    report = dict(loaded=sorted(sd), ignored=ignored, not_encoder=not_encoder, fresh=fresh)

    logger = MMLogger.get_current_instance()
    logger.info(f'{owner}: loaded {len(sd)} encoder tensors from {source}: '
                f'{", ".join(sorted(sd))}.')
    for k, why in ignored:
        logger.info(f'{owner}: ignored `{k}`: {why}.')
    if not_encoder:
        logger.info(f'{owner}: not encoder weights, ignored: ' + ', '.join(
            f'{t}.* ({n})' for t, n in sorted(not_encoder.items())) + '.')
    if fresh:
        logger.info(f'{owner}: freshly initialised: {", ".join(fresh)} ({layout.fresh_reason}).')
    return report


def load_encoder_checkpoint(model: nn.Module, path: str, layout: EncoderLayout,
                            prefix: Optional[str] = None) -> Dict[str, object]:
    """Read ``path`` (any supported format) and load its encoder into ``model``.

    See :func:`load_encoder_state_dict` for the arguments and the report.
    """
    return load_encoder_state_dict(model, load_external_state_dict(path), layout,
                                   source=_source(path), prefix=prefix)


__all__ = ['EncoderLayout', 'load_encoder_checkpoint', 'load_encoder_state_dict',
           'resolve_pretrained', 'split_pretrained_init_cfg', 'encoder_state_dict_from',
           'load_addp_encoder_state_dict', 'timm_vit_to_mmpretrain', 'check_encoder_geometry',
           'fit_pos_embed']
