"""ViTDet-style simple feature pyramid (``ADDPSimpleFPN``).

From the single stride-16 map of a plain ViT it builds maps at strides
4/8/16/32 (de-convolutions for 4 and 8, identity for 16, max-pooling for 32),
each followed by a 1x1 lateral and a 3x3 output conv with normalisation, and
optionally extra levels by stride-2 max-pooling of the last one (P6 for RPN).
This follows Li et al., "Exploring Plain Vision Transformer Backbones for
Object Detection" (ViTDet), §3 / Fig. 2(c); mmdet's own ``SimpleFPN`` lives in
``projects/ViTDet`` which is not shipped in the mmdet wheel.

mmpretrain's ``LN2d`` (LayerNorm over the channels of a ``[B, C, H, W]`` map)
is registered in mmdet's and mmseg's registries too, so mmdet heads can use
``norm_cfg=dict(type='LN2d')`` as ViTDet's Mask R-CNN does.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmpretrain.models.utils.norm import LayerNorm2d
from torch import Tensor, nn

from addp_mm.registry import register_alias_in_dense_codebases, register_model_everywhere

register_alias_in_dense_codebases(LayerNorm2d, 'LN2d')


def _norm(norm_cfg: Optional[dict], channels: int) -> nn.Module:
    if norm_cfg is None:
        return nn.Identity()
    if norm_cfg.get('type') == 'LN2d':  # ViTDet's epsilon unless configured
        cfg = dict(norm_cfg)
        cfg.pop('type')
        cfg.pop('requires_grad', None)
        return LayerNorm2d(channels, eps=cfg.pop('eps', 1e-6), **cfg)
    return build_norm_layer(norm_cfg, channels)[1]


@register_model_everywhere
class ADDPSimpleFPN(BaseModule):
    """Simple feature pyramid for plain (stride-16) ViT backbones.

    Args:
        backbone_channel (int): Channels of the backbone's stride-16 map.
        in_channels (Sequence[int], optional): Channels after the rescaling
            stage for each scale; defaults to ``[C/4, C/2, C, C]`` for the
            default scales (ViTDet). Defaults to None.
        out_channels (int): Output channels of every level. Defaults to 256.
        num_outs (int): Number of output levels; levels beyond
            ``len(scale_factors)`` are stride-2 max-pools of the last one.
            Defaults to 5.
        scale_factors (Sequence[float]): Rescaling of the stride-16 map, each
            one of 4, 2, 1, 0.5. Defaults to ``(4., 2., 1., 0.5)``.
        norm_cfg (dict, optional): Norm after the de-convs, lateral and output
            convs (``LN2d``, eps 1e-6 unless given, or any mmcv norm such as
            ``BN``/``GN``). Defaults to ``dict(type='LN2d')``.
        init_cfg (dict | list[dict], optional): Init config. Defaults to None.
    """

    def __init__(self,
                 backbone_channel: int,
                 in_channels: Optional[Sequence[int]] = None,
                 out_channels: int = 256,
                 num_outs: int = 5,
                 scale_factors: Sequence[float] = (4., 2., 1., 0.5),
                 norm_cfg: Optional[dict] = dict(type='LN2d'),
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        C = backbone_channel
        default_ch = {4.: C // 4, 2.: C // 2, 1.: C, 0.5: C}
        bad = [s for s in scale_factors if float(s) not in default_ch]
        if bad:
            raise ValueError(f'unsupported scale factors {bad}; choose from 4, 2, 1, 0.5')
        if in_channels is None:
            in_channels = [default_ch[float(s)] for s in scale_factors]
        if len(in_channels) != len(scale_factors):
            raise ValueError(f'in_channels {list(in_channels)} must have one entry per scale '
                             f'factor {list(scale_factors)}')
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs={num_outs} is smaller than the {len(scale_factors)} scales')
        self.backbone_channel = C
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.stages = nn.ModuleList()
        for s, ch in zip(self.scale_factors, self.in_channels):
            if s == 4.:
                mid = C // 2
                stage = nn.Sequential(
                    nn.ConvTranspose2d(C, mid, 2, stride=2), _norm(norm_cfg, mid), nn.GELU(),
                    nn.ConvTranspose2d(mid, ch, 2, stride=2))
            elif s == 2.:
                stage = nn.Sequential(nn.ConvTranspose2d(C, ch, 2, stride=2))
            elif s == 1.:
                stage = nn.Sequential() if ch == C else nn.Sequential(nn.Conv2d(C, ch, 1))
            else:
                stage = nn.Sequential(nn.MaxPool2d(2, stride=2))
                if ch != C:
                    stage.append(nn.Conv2d(C, ch, 1))
            self.stages.append(stage)
        bias = norm_cfg is None
        self.lateral_convs = nn.ModuleList([
            nn.Sequential(nn.Conv2d(ch, out_channels, 1, bias=bias), _norm(norm_cfg, out_channels))
            for ch in self.in_channels])
        self.fpn_convs = nn.ModuleList([
            nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias),
                          _norm(norm_cfg, out_channels)) for _ in self.in_channels])

    def forward(self, inputs: Union[Tensor, Sequence[Tensor]]) -> Tuple[Tensor, ...]:
        """``inputs``: the backbone outputs (the last, stride-16 map
        ``[B, C, h, w]`` is used) → ``num_outs`` maps of ``out_channels``."""
        x = inputs if isinstance(inputs, Tensor) else inputs[-1]
        if x.shape[1] != self.backbone_channel:
            raise ValueError(f'{type(self).__name__} expects {self.backbone_channel} input '
                             f'channels (backbone_channel), got {x.shape[1]}')
        outs = []
        for stage, lat, fpn in zip(self.stages, self.lateral_convs, self.fpn_convs):
            outs.append(fpn(lat(stage(x))))
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)


__all__ = ['ADDPSimpleFPN']
