"""Visualise ADDP pretraining: x_0, x_t and the predicted token map.

Every ``interval`` training iterations the hook takes the first
``num_images`` images of the current batch, draws a mask pair with a fixed
generator (seeded by the iteration, so reruns give the same picture), runs
:meth:`ADDP.forward_train_step` in eval mode (no dropout, no gradient) and
writes one image per sample through the runner's visualizer (mmengine
``Visualizer.add_image``), i.e. to every configured backend, typically
``LocalVisBackend`` (``<work_dir>/<timestamp>/vis_data/vis_image/*.png``) and
``TensorboardVisBackend``.

Each written image is a row of panels, left to right:

1. ``x_0``: the clean input;
2. ``x_t``: the noisy synthesized image the encoder sees (VQ-decoded mix of
   the predictor's soft embeddings at ``m_t`` and the true tokens elsewhere);
3. the mask ``m_t`` (white = masked / unreliable) up-sampled to pixels;
4. ADDP's prediction: its own distribution over the codebook at the masked
   positions, mapped to soft (expected) embeddings, with the true tokens
   elsewhere, decoded by the frozen VQGAN (the token-to-pixel mapping of
   generation, reference ``engine_generate.py``);
5. the same with the arg-max token at masked positions (hard tokens).
"""
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class ADDPVisualizationHook(Hook):
    """Write x_0 / x_t / predicted-token images during ADDP pretraining.

    Args:
        interval (int): Write every ``interval`` training iterations.
            Defaults to 1000.
        num_images (int): Images of the batch to show. Defaults to 4.
        seed (int): Base seed of the mask draw (``seed + iter``). Defaults to 0.
        prefix (str): Name prefix of the written images. Defaults to
            ``'addp'``.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 1000, num_images: int = 4, seed: int = 0,
                 prefix: str = 'addp') -> None:
        if interval < 1:
            raise ValueError(f'interval must be >= 1, got {interval}')
        if num_images < 1:
            raise ValueError(f'num_images must be >= 1, got {num_images}')
        self.interval = interval
        self.num_images = num_images
        self.seed = seed
        self.prefix = prefix

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if data_batch is None or not self.every_n_train_iters(runner, self.interval):
            return
        if not is_main_process():
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        panels = self.make_panels(model, data_batch, step=runner.iter + 1)
        for i, img in enumerate(panels):
            runner.visualizer.add_image(f'{self.prefix}_sample{i}', img, step=runner.iter + 1)

    @torch.no_grad()
    def make_panels(self, model, data_batch: dict, step: int) -> Sequence[np.ndarray]:
        """Run the model on the batch and return ``num_images`` RGB uint8 rows."""
        was_training = model.training
        model.eval()
        try:
            data = model.data_preprocessor(data_batch, False)
            images = model._as_batch(data['inputs'])[:self.num_images]
            gen = torch.Generator().manual_seed(self.seed + step)
            mask_t, mask_next = model.mask_generator(images.shape[0], model.num_tokens,
                                                     images.device, gen)
            out = model.forward_train_step(images, mask_t, mask_next, return_intermediates=True)
            K = model.num_codes
            logits = out['logits'][:, 1:1 + model.num_tokens, :K].float()  # [B, N, K]
            probs = logits.softmax(-1)
            pred_soft = model.tokens_to_pixels(out['z0'], probs, mask_t)
            hard = torch.where(mask_t.bool(), logits.argmax(-1), out['z0'])
            pred_hard = model.tokens_to_pixels(hard, None, mask_t)
            h, w = model.token_grid
            H, W = images.shape[-2:]
            mask_img = F.interpolate(mask_t.view(-1, 1, h, w), size=(H, W), mode='nearest')
            mask_img = mask_img.expand(-1, 3, -1, -1)
            row = torch.cat([images, out['x_t'], mask_img, pred_soft, pred_hard], dim=3)
            row = (row.clamp(0, 1) * 255).round().to(torch.uint8)
            return [r.permute(1, 2, 0).cpu().numpy() for r in row]
        finally:
            model.train(was_training)


__all__ = ['ADDPVisualizationHook']
