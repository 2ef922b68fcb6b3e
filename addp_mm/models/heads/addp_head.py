"""ADDP's pretraining head: soft-target cross-entropy on the masked positions."""
from typing import Optional

import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from torch import Tensor

from addp_mm.registry import register_model


@register_model
class ADDPLossHead(BaseModule):
    """Label-smoothed soft-target cross-entropy averaged over masked positions.

    ``ℓ_p = −Σ_c [(1−ε)·q_c + ε/V] · log_softmax(logits_p)_c`` where ``q`` is
    the target distribution over the codebook zero-padded to the ``V`` logits;
    ``loss = Σ m·ℓ / Σ m`` (reference ``models_addp.py``: ``F.cross_entropy``
    with ``label_smoothing=0.1`` against the predictor's probabilities). The
    loss is mmpretrain's ``LabelSmoothLoss`` in ``mode='original'`` (which
    gives the same tensors), computed in float32.

    Args:
        loss (dict, optional): Loss config. Defaults to
            ``dict(type='LabelSmoothLoss', label_smooth_val=label_smoothing,
            mode='original')``.
        label_smoothing (float): ε of the default loss. Defaults to 0.1.
        loss_weight (float): Multiplier. Defaults to 1.
        init_cfg (dict, optional): mmengine init config. Defaults to None.
    """

    def __init__(self,
                 loss: Optional[dict] = None,
                 label_smoothing: float = 0.1,
                 loss_weight: float = 1.,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if loss is None:
            loss = dict(type='LabelSmoothLoss', label_smooth_val=float(label_smoothing),
                        mode='original')
        self.loss_module = MODELS.build(loss)
        self.loss_weight = loss_weight

    def loss(self, logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Label-smoothed soft-target cross-entropy averaged over ``mask``.

        Args:
            logits (Tensor): ``[B, N, V]`` at the grid slots.
            target (Tensor): ``[B, N, K]`` probabilities, ``K <= V``.
            mask (Tensor): ``[B, N]``, 1 = masked (enters the loss).

        Returns:
            Tensor: Scalar loss.
        """
        B, N, V = logits.shape
        K = target.shape[-1]
        if K > V:
            raise ValueError(f'target has {K} classes but the logits only {V}')
        target = F.pad(target.float(), (0, V - K))  # [B, N, V]
        mask = mask.float().reshape(B * N)
        return self.loss_weight * self.loss_module(
            logits.float().reshape(B * N, V), target.reshape(B * N, V), weight=mask,
            avg_factor=mask.sum().clamp_min(1.))


__all__ = ['ADDPLossHead']
