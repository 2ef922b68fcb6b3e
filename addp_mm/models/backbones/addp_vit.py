"""ADDP encoder as an mmpretrain ``VisionTransformer`` for downstream tasks.

References:
    * ADDP: Learning General Representations for Image Recognition and
      Generation with Alternating Denoising Diffusion Process (ICLR 2024),
      https://arxiv.org/abs/2306.05423; official fine-tuning code
      ``main_finetune.py`` / ``models_vit.py`` (built on MAE's).
    * MAE (https://arxiv.org/abs/2111.06377) for the fine-tuning and linear
      probing protocols, and timm's ``vision_transformer.py``.

The pretraining encoder of ADDP (``addp_mm.models.selfsup.ADDPViT``) is a
plain pre-LN ViT with two extra LayerNorms: ``tokenizer_norm`` on the 257
input tokens (after the position embedding, before block 0) and the final
``norm``. The released fine-tuning model keeps neither: it loads the
pretraining state dict non-strictly by name, so both are silently dropped and
the head is ``fc_norm(mean of patch tokens) -> linear`` (reference
``models_vit.py`` / ``main_finetune.py``).
:class:`ADDPVisionTransformer` reproduces that by default and can keep both
norms on request (``use_tokenizer_norm=True, final_norm=True``).
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

from mmengine.logging import MMLogger
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor

from addp_mm.models.utils.encoder_weights import (encoder_state_dict_from,
                                                  timm_vit_to_mmpretrain)
from addp_mm.registry import register_model_everywhere
from addp_mm.utils.checkpoint import (CheckpointError, load_external_state_dict,
                                      load_state_dict_strict)

__all__ = ['ADDPVisionTransformer']


def _split_pretrained_init_cfg(init_cfg: Union[dict, List[dict], None]
                               ) -> Tuple[Optional[dict], Union[dict, List[dict], None]]:
    """Take the ``type='Pretrained'`` entry out of an ``init_cfg``.

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


@register_model_everywhere
class ADDPVisionTransformer(VisionTransformer):
    """ViT backbone that loads ADDP-pretrained encoder weights.

    A thin subclass of mmpretrain's :class:`VisionTransformer` (same key
    names, ``get_layer_depth`` for layer-wise lr decay, ``frozen_stages``,
    ``out_type``, pos-embed interpolation in ``forward``). What it adds:

    * **Loading** in :meth:`init_weights` (never in ``__init__``) from
      ``pretrained=`` or ``init_cfg=dict(type='Pretrained', checkpoint=...)``:
      our pretraining checkpoints (``state_dict`` with ``backbone.*`` keys),
      converted or official ADDP releases (``{'model': {...}}`` with timm
      names) and official fine-tuning files. Files are read with
      ``weights_only=True`` (:func:`addp_mm.utils.checkpoint.load_external_state_dict`);
      mmengine's ``Pretrained`` initializer, which unpickles freely, is not used.
      Every key is accounted for: the loaded ones, the deliberately ignored
      ones (with the reason) and the other parts of the file (decoder,
      tokenizer, token predictor) are logged and kept in
      :attr:`pretrained_report`. Missing encoder keys or shape mismatches raise
      :class:`~addp_mm.utils.checkpoint.CheckpointError`.
    * **Pos-embed resizing** to the configured ``img_size`` (bicubic, cls row
      kept, like MAE's ``interpolate_pos_embed``), with a clear error when the
      checkpoint's grid is not square and ``pretrained_patch_resolution`` is
      not given.
    * **The pre-block LayerNorm option.** ``use_tokenizer_norm=False``
      (default) is the reference fine-tuning: the pretraining
      ``tokenizer_norm`` is dropped. ``True`` builds the LayerNorm as
      mmpretrain's ``pre_norm`` and loads ``tokenizer_norm.*`` into it, so the
      blocks see the same input distribution as in pretraining (the
      pretraining's Dropout(0.1) after it is not rebuilt; ``drop_rate`` acts
      before the norm). Unlike mmpretrain's ``pre_norm=True``, the patch
      embedding keeps its bias, which ADDP has.
    * ``final_norm`` defaults to False (reference: the pretraining ``norm`` is
      dropped); with True the pretraining ``norm.*`` is loaded into ``ln1``.
      With ``out_type='avg_featmap'`` (default) the pooled patch tokens go
      through ``ln2``, the reference ``fc_norm``, which is freshly initialised.

    Args:
        arch (str | dict): mmpretrain ViT arch name (``'base'``, ``'large'``,
            ...) or a dict with ``embed_dims``, ``num_layers``, ``num_heads``
            and ``feedforward_channels``. Defaults to ``'base'``.
        img_size (int | tuple): Input size the pos-embed is built for; the
            checkpoint's pos-embed is resized to it on load. Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        out_type (str): See :class:`VisionTransformer`. Defaults to
            ``'avg_featmap'`` (mean of patch tokens, then ``ln2`` = fc_norm).
        final_norm (bool): Apply (and load) the pretraining final ``norm``.
            Defaults to False, as the reference fine-tuning.
        use_tokenizer_norm (bool): Apply (and load) the pretraining
            ``tokenizer_norm`` before the first block. Defaults to False, as
            the reference fine-tuning.
        pretrained (str, optional): Checkpoint to load in :meth:`init_weights`.
            Same as ``init_cfg=dict(type='Pretrained', checkpoint=...)``; give
            only one. Defaults to None.
        pretrained_patch_resolution (tuple[int, int], optional): The
            ``(rows, cols)`` patch grid of the checkpoint's pos-embed. Needed
            only to resize a non-square grid; square grids are inferred.
            Defaults to None.
        init_cfg (dict | list[dict], optional): Initialization config. A
            ``type='Pretrained'`` entry (``checkpoint``, optional ``prefix``)
            is handled by this class as described above; other entries go to
            mmengine. Defaults to None.
        **kwargs: Other arguments of :class:`VisionTransformer` (e.g.
            ``drop_path_rate``, ``frozen_stages``, ``out_indices``,
            ``norm_cfg``). ``pre_norm`` is not accepted: use
            ``use_tokenizer_norm``.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 out_type: str = 'avg_featmap',
                 final_norm: bool = False,
                 use_tokenizer_norm: bool = False,
                 pretrained: Optional[str] = None,
                 pretrained_patch_resolution: Optional[Sequence[int]] = None,
                 init_cfg: Union[dict, List[dict], None] = None,
                 **kwargs) -> None:
        if 'pre_norm' in kwargs:
            raise TypeError(
                'ADDPVisionTransformer does not take `pre_norm` (mmpretrain\'s pre_norm also '
                'drops the patch-embed bias); use `use_tokenizer_norm=True` to apply the '
                'pretraining tokenizer_norm before the blocks.')
        pretrained_cfg, rest_init_cfg = _split_pretrained_init_cfg(init_cfg)
        if pretrained_cfg is not None and pretrained is not None:
            raise ValueError('give the checkpoint either as `pretrained=` or as '
                             "init_cfg=dict(type='Pretrained', ...), not both.")
        if pretrained_cfg is not None:
            unknown = set(pretrained_cfg) - {'type', 'checkpoint', 'prefix', 'map_location'}
            if unknown:
                raise ValueError(f'unsupported keys {sorted(unknown)} in the Pretrained init_cfg '
                                 'of ADDPVisionTransformer (supported: checkpoint, prefix).')
            pretrained = pretrained_cfg.get('checkpoint')
        if pretrained_patch_resolution is not None:
            pretrained_patch_resolution = tuple(int(s) for s in pretrained_patch_resolution)
            if len(pretrained_patch_resolution) != 2:
                raise ValueError('pretrained_patch_resolution must be (rows, cols), got '
                                 f'{pretrained_patch_resolution}')

        patch_cfg = dict(kwargs.pop('patch_cfg', None) or {})
        patch_cfg.setdefault('bias', True)  # ADDP's patch embedding has a bias
        super().__init__(
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            out_type=out_type,
            final_norm=final_norm,
            pre_norm=use_tokenizer_norm,
            patch_cfg=patch_cfg,
            init_cfg=rest_init_cfg,
            **kwargs)
        self.use_tokenizer_norm = use_tokenizer_norm
        self.pretrained = pretrained
        self.pretrained_prefix = (pretrained_cfg or {}).get('prefix', None)
        self.pretrained_patch_resolution = pretrained_patch_resolution
        self.pretrained_report: Optional[Dict[str, list]] = None

    # ------------------------------------------------------------------ init
    def init_weights(self) -> None:
        """Default initialisation, then the pretrained encoder if one is set."""
        already_initialised = self._is_init  # a second call must not reload
        super().init_weights()
        if self.pretrained and not already_initialised:
            self.load_pretrained(self.pretrained, prefix=self.pretrained_prefix)

    def load_pretrained(self, path: str, prefix: Optional[str] = None) -> Dict[str, list]:
        """Load ADDP encoder weights from ``path`` into this backbone.

        Args:
            path (str): Checkpoint path (any format listed in the class doc).
            prefix (str, optional): Key prefix to select, e.g. ``'backbone.'``.
                ``'backbone.'`` is recognised automatically. Defaults to None.

        Returns:
            dict: ``loaded`` (mmpretrain key names), ``ignored`` (timm names of
            encoder keys deliberately not used, with the reason) and
            ``not_encoder`` (count of the other keys of the file per top-level
            name). Also stored in :attr:`pretrained_report`.

        Raises:
            CheckpointError: No encoder weights in the file, a norm requested
                by the options is missing, keys or shapes do not match the
                arch, or the pos-embed cannot be resized.
        """
        raw = load_external_state_dict(path)
        source = repr(path)
        if prefix and prefix != 'backbone.':
            if not any(k.startswith(prefix) for k in raw):
                raise CheckpointError(f'no key of {source} starts with prefix {prefix!r}.')
            raw = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
        enc = encoder_state_dict_from(raw, source=source)

        ignored: List[Tuple[str, str]] = []
        if not self.use_tokenizer_norm:
            for k in [k for k in enc if k.startswith('tokenizer_norm.')]:
                enc.pop(k)
                ignored.append((k, 'use_tokenizer_norm=False (reference fine-tuning drops it)'))
        elif 'tokenizer_norm.weight' not in enc:
            raise CheckpointError(
                f'{source} has no `tokenizer_norm.*` (e.g. it is a fine-tuned model), but '
                'use_tokenizer_norm=True asks for it. Set use_tokenizer_norm=False.')
        if not self.final_norm:
            for k in [k for k in enc if k.startswith('norm.')]:
                enc.pop(k)
                ignored.append((k, 'final_norm=False (reference fine-tuning drops it)'))
        elif 'norm.weight' not in enc:
            raise CheckpointError(
                f'{source} has no final `norm.*` (e.g. it is a fine-tuned model), but '
                'final_norm=True asks for it. Set final_norm=False.')

        has_cls_row = 'cls_token' in enc  # the ADDP encoder's pos_embed has a cls row
        if not self.with_cls_token and has_cls_row:
            enc.pop('cls_token')
            ignored.append(('cls_token', 'with_cls_token=False (its pos-embed row is dropped too)'))

        sd = timm_vit_to_mmpretrain(enc)
        sd['pos_embed'] = self._resize_ckpt_pos_embed(sd['pos_embed'], source, has_cls_row)
        # Fresh (not pretrained) parameters keep their initial values; the
        # strict check then catches any other missing, surplus or mis-shaped key.
        own = self.state_dict()
        fresh = [k for k in own if k.startswith('ln2.')]
        full = dict(sd)
        full.update({k: own[k] for k in fresh})
        load_state_dict_strict(self, full, source)

        # Account for every key of the file.
        encoder_names = set(encoder_state_dict_from(raw, source=source))
        rest = [k for k in raw if k not in encoder_names
                and not (k.startswith('backbone.') and k[len('backbone.'):] in encoder_names)]
        not_encoder: Dict[str, int] = {}
        for k in rest:
            parts = k.split('.')
            top = 'backbone.' + parts[1] if parts[0] == 'backbone' else parts[0]
            not_encoder[top] = not_encoder.get(top, 0) + 1
        report = dict(loaded=sorted(sd), ignored=ignored, not_encoder=not_encoder, fresh=fresh)
        self.pretrained_report = report

        logger = MMLogger.get_current_instance()
        logger.info(
            f'ADDPVisionTransformer: loaded {len(sd)} encoder tensors from {source}: '
            f'{", ".join(sorted(sd))}.')
        for k, why in ignored:
            logger.info(f'ADDPVisionTransformer: ignored `{k}`: {why}.')
        if not_encoder:
            logger.info('ADDPVisionTransformer: not encoder weights, ignored: ' + ', '.join(
                f'{t}.* ({n})' for t, n in sorted(not_encoder.items())) + '.')
        if fresh:
            logger.info(f'ADDPVisionTransformer: freshly initialised: {", ".join(fresh)} '
                        '(fc_norm of the average-pooling head).')
        return report

    # -------------------------------------------------------------- pos-embed
    def _resize_ckpt_pos_embed(self, pos_embed: Tensor, source: str,
                               has_cls_row: Optional[bool] = None) -> Tensor:
        """Resize a checkpoint pos-embed ``[1, (cls)+h*w, C]`` to this model's grid.

        Args:
            pos_embed (Tensor): The checkpoint's table.
            source (str): Name of the checkpoint, for messages.
            has_cls_row (bool, optional): Whether row 0 belongs to the cls token.
                None guesses it (a model with a cls token expects one; otherwise
                a row count of model+1 or square+1 means a cls row).
                Defaults to None.
        """
        if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
            raise CheckpointError(f'pos_embed of {source} has shape {tuple(pos_embed.shape)}; '
                                  'expected [1, tokens, channels].')
        if not self.with_cls_token:
            rows = pos_embed.shape[1]
            if has_cls_row is None:
                has_cls_row = (rows == self.pos_embed.shape[1] + 1 or (
                    math.isqrt(rows - 1)**2 == rows - 1 and math.isqrt(rows)**2 != rows))
            if has_cls_row:
                pos_embed = pos_embed[:, 1:]  # drop the cls row of a model without cls token
        if pos_embed.shape == self.pos_embed.shape:
            return pos_embed
        if pos_embed.shape[2] != self.pos_embed.shape[2]:
            raise CheckpointError(
                f'pos_embed of {source} has width {pos_embed.shape[2]} but the model has '
                f'embed_dims={self.pos_embed.shape[2]}; pick the matching arch.')
        num_patches = pos_embed.shape[1] - self.num_extra_tokens
        if self.pretrained_patch_resolution is not None:
            src_hw = self.pretrained_patch_resolution
            if src_hw[0] * src_hw[1] != num_patches:
                raise CheckpointError(
                    f'pretrained_patch_resolution={src_hw} gives {src_hw[0] * src_hw[1]} '
                    f'positions but the pos_embed of {source} has {num_patches} (+ '
                    f'{self.num_extra_tokens} cls); fix pretrained_patch_resolution.')
        else:
            side = math.isqrt(max(num_patches, 0))
            if side * side != num_patches or num_patches == 0:
                raise CheckpointError(
                    f'cannot resize the pos_embed of {source}: its {num_patches} patch positions '
                    'do not form a square grid, so the (rows, cols) layout is unknown. Pass '
                    '`pretrained_patch_resolution=(rows, cols)` to the backbone, or use the '
                    f'pretraining input size (model grid {tuple(self.patch_resolution)}).')
            src_hw = (side, side)
        dst_hw = tuple(self.patch_resolution)
        MMLogger.get_current_instance().info(
            f'ADDPVisionTransformer: resize pos_embed of {source} from grid {src_hw} to '
            f'{dst_hw} ({self.interpolate_mode}).')
        return resize_pos_embed(pos_embed.float(), src_hw, dst_hw, self.interpolate_mode,
                                self.num_extra_tokens).to(pos_embed.dtype)

    def _prepare_pos_embed(self, state_dict, prefix, *args, **kwargs) -> None:
        """State-dict pre-hook: resize a foreign-grid pos-embed with clear errors."""
        name = prefix + 'pos_embed'
        if name in state_dict and state_dict[name].shape != self.pos_embed.shape:
            state_dict[name] = self._resize_ckpt_pos_embed(state_dict[name], 'the state dict')

    # ---------------------------------------------------------- layer decay
    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer id for layer-wise lr decay (BEiT/MAE rule).

        ``cls_token``, ``pos_embed``, ``patch_embed`` and the optional
        ``pre_norm`` (tokenizer_norm, which sits before block 0) get 0,
        ``layers.i`` gets ``i + 1``, everything else ``num_layers + 1``.

        Args:
            param_name (str): Parameter name.
            prefix (str): Prefix of the backbone's names. Defaults to ''.

        Returns:
            tuple[int, int]: ``(layer_id, num_layers + 2)``.
        """
        if param_name.startswith(prefix) and param_name[len(prefix):].startswith('pre_norm.'):
            return 0, self.num_layers + 2
        return super().get_layer_depth(param_name, prefix)

    def train(self, mode: bool = True) -> 'ADDPVisionTransformer':
        """Set train mode, keeping frozen stages in eval mode."""
        super().train(mode)
        if mode and self.frozen_stages > 0:
            self._freeze_stages()
        return self
