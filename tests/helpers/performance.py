"""Tiny models for the performance-switch tests (not a test module)."""
import torch

from addp_mm.models.target_generators import MAGETokenPredictor
from addp_mm.models.tokenizers import VQGANTokenizer

#: A VQGAN with every kind of block (3 levels: ResBlocks with and without a
#: width change, avg-pool down-sampling, nearest up-sampling + conv).
TINY_VQGAN = dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=16, embed_dim=16,
                  num_embeddings=64, norm_num_groups=8)
TINY_MAGE = dict(num_codes=64, num_classes=10, num_tokens=16, embed_dims=64, depth=2, num_heads=4,
                 decoder_embed_dims=64, decoder_depth=2, decoder_num_heads=4, fake_class_id=64)


def make_vqgan(seed: int = 0, **switches) -> VQGANTokenizer:
    """Tiny VQGAN with reproducible random weights (a codebook spread like real latents)."""
    torch.manual_seed(seed)
    tok = VQGANTokenizer(**TINY_VQGAN, **switches)
    with torch.no_grad():
        tok.quantize.embedding.weight.normal_(0, 0.5)
    return tok


def make_mage(seed: int = 0, **switches) -> MAGETokenPredictor:
    torch.manual_seed(seed)
    return MAGETokenPredictor(**TINY_MAGE, **switches)


def images(batch: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g)


def random_mask(batch: int, n: int, n_masked: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(batch, n, generator=g).argsort(1)
    mask = torch.zeros(batch, n, dtype=torch.bool)
    mask.scatter_(1, order[:, :n_masked], True)
    return mask


def tiny_addp_cfg(**overrides) -> dict:
    """A tiny ADDP (16 px, 4x4 tokens) built on :data:`TINY_VQGAN` / :data:`TINY_MAGE`."""
    cfg = dict(
        type='ADDP',
        require_frozen_checkpoints=False,
        backbone=dict(type='ADDPPretrainEncoder', img_size=16, patch_size=4, embed_dims=32,
                      num_layers=2, num_heads=2),
        neck=dict(type='ADDPDecoder', in_channels=32, embed_dims=32, num_layers=2, num_heads=2,
                  num_classes=10),
        head=dict(type='ADDPLossHead', label_smoothing=0.1),
        tokenizer=dict(type='VQGANTokenizer', **TINY_VQGAN),
        token_predictor=dict(type='MAGETokenPredictor', **TINY_MAGE),
        sampler=dict(type='AlternatingDenoisingSampler', num_steps=6, seed=0))
    cfg.update(overrides)
    return cfg


def build_tiny_addp(seed: int = 0, **overrides):
    """Tiny ADDP with reproducible random weights (codebook spread like real latents)."""
    from mmpretrain.registry import MODELS

    import addp_mm  # noqa: F401
    torch.manual_seed(seed)
    model = MODELS.build(tiny_addp_cfg(**overrides))
    model.init_weights()
    with torch.no_grad():
        model.tokenizer.quantize.embedding.weight.normal_(0, 0.5)
    return model
