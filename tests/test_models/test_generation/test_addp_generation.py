"""The sampler on the real (tiny) ADDP model: the skip of fully-masked work is
exact, seeded runs reproduce, inpainting keeps the known tokens."""
import torch

from addp_mm.models.generation import AlternatingDenoisingSampler


def test_skip_is_exact_on_the_real_model(tiny_addp):
    """While everything is masked neither the encoder nor the VQ decode runs; same output."""
    model, _ = tiny_addp
    calls = {'encode': 0, 'decode': 0}
    enc, dec = model.encode_pixels, model.tokenizer.decode

    def counting_enc(x):
        calls['encode'] += 1
        return enc(x)

    def counting_dec(z):
        calls['decode'] += 1
        return dec(z)
    model.encode_pixels, model.tokenizer.decode = counting_enc, counting_dec
    try:
        steps = 4
        fast = AlternatingDenoisingSampler(num_steps=steps).sample(model, seeds=[3, 4])
        n_fast = dict(calls)
        calls.update(encode=0, decode=0)
        slow = AlternatingDenoisingSampler(num_steps=steps, skip_fully_masked=False).sample(model, seeds=[3, 4])
        n_slow = dict(calls)
    finally:
        del model.encode_pixels, model.tokenizer.decode
    assert torch.equal(fast['tokens'], slow['tokens'])
    assert torch.equal(fast['images'], slow['images'])
    # 64 tokens, 4 cosine steps: ceil(64 cos(pi/8)) = 60 < 64, so only step 0 starts fully
    # masked: no encoder there, and no decode of the (ignored) initial image
    assert n_fast == dict(encode=steps - 1, decode=steps)
    assert n_slow['decode'] == steps + 1


def test_real_model_sampling_reproducible(tiny_addp):
    model, _ = tiny_addp
    sampler = AlternatingDenoisingSampler(num_steps=3)
    a = sampler.sample(model, seeds=[0, 1])
    b = sampler.sample(model, seeds=[0, 1])
    assert torch.equal(a['images'], b['images']) and torch.equal(a['tokens'], b['tokens'])
    single = sampler.sample(model, seeds=[1])
    assert torch.equal(single['tokens'][0], a['tokens'][1])
    assert a['images'].shape == (2, 3, 64, 64) and a['mask'].sum(1).tolist() == [1, 1]
    assert not torch.equal(a['tokens'][0], a['tokens'][1])


def test_real_model_inpainting_keeps_known_tokens(tiny_addp):
    model, _ = tiny_addp
    from skimage import data
    from skimage.transform import resize
    img = torch.from_numpy(resize(data.astronaut(), (64, 64), anti_aliasing=True)).permute(2, 0, 1).float()
    images = torch.stack([img, img.flip(-1), img.flip(-2)])
    region = torch.zeros(3, 1, 64, 64)
    region[0, :, 16:40, 16:40] = 1  # 3x3 tokens
    region[1, :, 0:8, :] = 1        # the top token row (8 tokens): a different size in one batch
    region[2, :, 16:40, 16:40] = 1
    sampler = AlternatingDenoisingSampler(num_steps=3)
    out = sampler.inpaint(model, images, region, seeds=[0, 1, 2], return_trajectory=True)
    reg, known = out['region'], out['known_tokens']
    assert reg.sum(1).tolist() == [9, 8, 9]
    assert torch.equal(out['tokens'][~reg], known[~reg])
    assert all(bool((m <= reg).all()) for _, m in out['trajectory'])
    assert out['images'].shape == (3, 3, 64, 64)
    # the batch-of-groups path equals running a sample alone
    alone = sampler.inpaint(model, images[1:2], region[1:2], seeds=[1])
    assert torch.equal(alone['tokens'][0], out['tokens'][1])
