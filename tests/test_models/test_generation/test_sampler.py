"""AlternatingDenoisingSampler mechanics on a tiny stand-in with ADDP's generation contract.

The stand-in implements exactly the methods the sampler uses (``neck``,
``predict_logits``, ``tokens_to_pixels``, ``tokenizer``) with real
pixel/token dependencies, so these tests exercise the loop itself; the tests in
``test_addp_generation.py`` repeat the key checks on the real ADDP model.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from addp_mm.models.generation import AlternatingDenoisingSampler
from addp_mm.models.generation.schedule import masked_count_schedule


class ToyTokenizer(nn.Module):
    def __init__(self, K=16, C=4, f=4):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.num_embeddings, self.embed_dim, self.downsample_factor = K, C, f
        self.codebook = nn.Parameter(torch.randn(K, C, generator=g))
        self.to_c = nn.Parameter(torch.randn(3, C, generator=g))
        self.to_rgb = nn.Parameter(torch.randn(C, 3, generator=g) * 0.3)

    def encode(self, x):
        h = F.avg_pool2d(x, self.downsample_factor).permute(0, 2, 3, 1) @ self.to_c  # [B,h,w,C]
        B, hh, ww, C = h.shape
        d = torch.cdist(h.reshape(B, -1, C), self.codebook[None].expand(B, -1, -1))
        idx = d.argmin(-1)
        return idx, self.codebook[idx].reshape(B, hh, ww, C).permute(0, 3, 1, 2)

    def decode(self, quant):
        x = (quant.permute(0, 2, 3, 1) @ self.to_rgb).permute(0, 3, 1, 2) + 0.5
        return F.interpolate(x, scale_factor=self.downsample_factor, mode='nearest')


class ToyNeck(nn.Module):
    def __init__(self, N, K, D=8):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.decoder_pos_embed_learned = nn.Parameter(torch.randn(1, 1 + N, D, generator=g))
        self.mask_token = nn.Parameter(torch.randn(D, generator=g))
        self.token_emb = nn.Parameter(torch.randn(K + 2, D, generator=g))
        self.latent_proj = nn.Parameter(torch.randn(D, D, generator=g))
        self.head = nn.Parameter(torch.randn(D, K + 2, generator=g))

    def forward(self, latent, tokens, mask):
        B, N = tokens.shape
        m = mask.bool()
        if latent is None:
            assert m.all(), 'latent may be omitted only when all masked'
            feats = self.mask_token.expand(B, N, -1)
        else:
            feats = torch.where(m[..., None], self.mask_token, latent[:, 1:] @ self.latent_proj)
        vis = (~m).float()[..., None]
        ctx = ((self.token_emb[tokens] + feats) * vis).sum(1, keepdim=True) / vis.sum(1, keepdim=True).clamp(min=1)
        h = torch.tanh(feats + ctx + self.decoder_pos_embed_learned[:, 1:])
        logits = (h @ self.head) * 3.
        return torch.cat([logits[:, :1], logits, logits[:, :0]], dim=1)  # [B, 1+N(+n_vis), V]


class ToyADDP(nn.Module):
    """Tiny model with ADDP's generation contract (reference ``engine_generate.py``)."""

    def __init__(self, grid=4, K=16):
        super().__init__()
        self.tokenizer = ToyTokenizer(K=K)
        self.neck = ToyNeck(grid * grid, K)
        self.num_tokens, self.num_codes = grid * grid, K
        self.enc = nn.Conv2d(3, 8, 4, stride=4)
        self.calls = dict(encoder=0, decode=0)

    def encode_pixels(self, x):
        self.calls['encoder'] += 1
        f = self.enc(x.clamp(0, 1)).flatten(2).transpose(1, 2)
        return torch.cat([f.mean(1, keepdim=True), f], 1)

    def predict_logits(self, x, tokens, mask):
        latent = None if mask.bool().all() else self.encode_pixels(x)
        return self.neck(latent, tokens, mask)[:, 1:1 + tokens.shape[1]]

    def tokens_to_pixels(self, tokens, probs, mask):
        self.calls['decode'] += 1
        B, N = tokens.shape
        side = int(N ** 0.5)
        soft = probs @ self.tokenizer.codebook
        hard = self.tokenizer.codebook[tokens]
        z = torch.where(mask.bool()[..., None], soft, hard)
        return self.tokenizer.decode(z.reshape(B, side, side, -1).permute(0, 3, 1, 2))


@pytest.fixture
def model():
    return ToyADDP().eval()


def test_bad_arguments():
    with pytest.raises(ValueError, match='positive integer'):
        AlternatingDenoisingSampler(num_steps=0)
    with pytest.raises(ValueError, match='schedule'):
        AlternatingDenoisingSampler(schedule='exp')
    with pytest.raises(ValueError, match='top_p'):
        AlternatingDenoisingSampler(top_p=0)
    with pytest.raises(TypeError, match='cannot generate'):
        AlternatingDenoisingSampler().sample(nn.Linear(2, 2), num_samples=1)


def test_seeded_sampling_is_reproducible_and_batch_independent(model):
    sampler = AlternatingDenoisingSampler(num_steps=6)
    a = sampler.sample(model, seeds=[0, 1, 2])
    b = sampler.sample(model, seeds=[0, 1, 2])
    assert torch.equal(a['tokens'], b['tokens']) and torch.equal(a['images'], b['images'])
    alone = sampler.sample(model, seeds=[1])
    assert torch.equal(alone['tokens'][0], a['tokens'][1])
    assert torch.allclose(alone['images'][0], a['images'][1], atol=1e-6)
    other = sampler.sample(model, seeds=[3, 4, 5])
    assert not torch.equal(other['tokens'], a['tokens'])
    assert a['images'].shape == (3, 3, 16, 16)


def test_schedule_counts_and_final_soft_token(model):
    sampler = AlternatingDenoisingSampler(num_steps=5, schedule='linear')
    out = sampler.sample(model, num_samples=2, return_trajectory=True)
    counts = [int(m.sum(1)[0]) for _, m in out['trajectory']]
    assert counts == masked_count_schedule(5, 16, 'linear')
    assert all(bool((m.sum(1) == c).all()) for (_, m), c in zip(out['trajectory'], counts))
    # masks are nested: a position fixed once stays fixed
    masks = [m for _, m in out['trajectory']]
    assert all(bool((b <= a).all()) for a, b in zip(masks, masks[1:]))
    assert out['mask'].sum(1).tolist() == [1, 1]


def test_skipping_fully_masked_steps_changes_nothing(model):
    steps = 20
    counts = masked_count_schedule(steps, 16)
    n_full = next(i for i, c in enumerate(counts) if c < 16)  # steps that end fully masked
    assert n_full == 4  # 16 tokens: ceil(16*cos(pi/2*k/20)) = 16 for k = 1..4
    fast = AlternatingDenoisingSampler(num_steps=steps)
    slow = AlternatingDenoisingSampler(num_steps=steps, skip_fully_masked=False)
    model.calls.update(encoder=0, decode=0)
    a = fast.sample(model, seeds=[5, 6])
    calls_fast = dict(model.calls)
    model.calls.update(encoder=0, decode=0)
    b = slow.sample(model, seeds=[5, 6])
    assert torch.equal(a['tokens'], b['tokens']) and torch.equal(a['images'], b['images'])
    assert calls_fast == dict(encoder=steps - n_full - 1, decode=steps - n_full)
    # the non-skipping run decodes an initial image and encodes at every step
    assert model.calls['decode'] == steps + 1


def test_inpainting_keeps_known_tokens(model):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 16, 16, generator=g)
    region = torch.zeros(2, 1, 16, 16)
    region[0, :, 0:8, 0:8] = 1      # top-left 2x2 tokens
    region[1, :, 5:9, 12:16] = 1    # touches tokens in rows 1-2, column 3
    sampler = AlternatingDenoisingSampler(num_steps=4)
    out = sampler.inpaint(model, images, region, seeds=[0, 1], return_trajectory=True)
    known, reg = out['known_tokens'], out['region']
    assert reg.sum(1).tolist() == [4, 2]
    assert torch.equal(out['tokens'][~reg], known[~reg])
    for _, m in out['trajectory']:
        assert bool((m <= reg).all())
    # changing the pixels inside the region does not change the result (nothing leaks)
    images2 = images.clone()
    images2[0, :, 0:8, 0:8] = 1 - images2[0, :, 0:8, 0:8]
    out2 = sampler.inpaint(model, images2, region, seeds=[0, 1])
    assert torch.equal(out2['known_tokens'][~reg], known[~reg])
    assert torch.equal(out2['tokens'], out['tokens'])
    with pytest.raises(ValueError, match='at least one position'):
        sampler.inpaint(model, images, torch.zeros(2, 16))


def test_predict_fills_data_samples(model):
    from mmpretrain.structures import DataSample

    from addp_mm.datasets.generation import ADDPGenerationDataset
    ds = ADDPGenerationDataset(num_samples=3)
    items = [ds[i] for i in range(3)]
    assert items[2]['data_samples'].metainfo['sample_idx'] == 2
    sampler = AlternatingDenoisingSampler(num_steps=3, seed=10)
    out = sampler.predict(model, None, [it['data_samples'] for it in items])
    assert all(isinstance(o, DataSample) for o in out)
    img = out[1].gen_img
    assert img.dtype == torch.uint8 and img.shape == (3, 16, 16)
    ref = sampler.sample(model, seeds=[11])
    assert torch.equal(out[1].gen_tokens, ref['tokens'][0])
