"""Shared helpers of the ADDP pretraining tests (not a test module)."""
import copy
import functools
import importlib.util
import os.path as osp
from typing import Dict, Tuple

import torch

from helpers.checkout import REPO_ROOT as ROOT
FIXTURE = osp.join(ROOT, 'tests', 'data', 'addp_official_tiny_v1.pt')
KEYS_DIR = osp.join(ROOT, 'tests', 'data', 'checkpoint_keys')
TINY_CFG = osp.join(ROOT, 'configs', 'tests', 'addp_vit-tiny-p8_1xb8-300i_embedded-64px.py')
BASE_CFG = osp.join(ROOT, 'configs', 'addp', 'addp_vit-base-p16_32xb128-amp-coslr-1600e_in1k-256px.py')
LARGE_CFG = osp.join(ROOT, 'configs', 'addp', 'addp_vit-large-p16_32xb128-amp-coslr-800e_in1k-256px.py')


@functools.lru_cache(maxsize=1)
def load_fixture() -> dict:
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


@functools.lru_cache(maxsize=1)
def converter():
    """The converter module ``tools/model_converters/addp_to_mm.py``."""
    path = osp.join(ROOT, 'tools', 'model_converters', 'addp_to_mm.py')
    spec = importlib.util.spec_from_file_location('addp_to_mm', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fixture_model_cfg(tokenizer_ckpt: str, predictor_ckpt: str) -> dict:
    """ADDP config matching the fixture's tiny official-format model."""
    c = load_fixture()['meta']['config']
    a, tp, vq = c['addp'], c['token_predictor'], c['vqgan']
    num_tokens = (a['img_size'] // a['patch_size'])**2
    return dict(
        type='ADDP',
        data_preprocessor=dict(type='SelfSupDataPreprocessor', mean=[0., 0., 0.],
                               std=[255., 255., 255.], to_rgb=True),
        backbone=dict(type='ADDPPretrainEncoder', img_size=a['img_size'],
                      patch_size=a['patch_size'], embed_dims=a['embed_dim'],
                      num_layers=a['depth'], num_heads=a['num_heads'], mlp_ratio=a['mlp_ratio']),
        neck=dict(type='ADDPDecoder', in_channels=a['embed_dim'], embed_dims=a['decoder_embed_dim'],
                  num_layers=a['decoder_depth'], num_heads=a['decoder_num_heads'],
                  mlp_ratio=a['mlp_ratio'], num_classes=1000),
        head=dict(type='ADDPLossHead', label_smoothing=0.1),
        tokenizer=dict(type='VQGANTokenizer', ch=vq['ddconfig']['ch'],
                       ch_mult=tuple(vq['ddconfig']['ch_mult']),
                       num_res_blocks=vq['ddconfig']['num_res_blocks'],
                       z_channels=vq['ddconfig']['z_channels'], num_embeddings=vq['n_embed'],
                       embed_dim=vq['embed_dim'], checkpoint=tokenizer_ckpt),
        token_predictor=dict(type='MAGETokenPredictor', num_codes=vq['n_embed'], num_classes=1000,
                             num_tokens=num_tokens, embed_dims=tp['embed_dim'], depth=tp['depth'],
                             num_heads=tp['num_heads'], decoder_embed_dims=tp['decoder_embed_dim'],
                             decoder_depth=tp['decoder_depth'],
                             decoder_num_heads=tp['decoder_num_heads'], checkpoint=predictor_ckpt),
        mask_generator=dict(type='ADDPNestedMaskGenerator'))


def write_fixture_files(tmp_dir: str) -> Dict[str, str]:
    """Write the fixture's official-format files: full ADDP ``{'model':...}``,
    the MAGE-format predictor and the VQGAN file."""
    sd = load_fixture()['state_dict']['addp']
    paths = dict(addp=osp.join(tmp_dir, 'addp_official_tiny.pth'),
                 mage=osp.join(tmp_dir, 'mage_tiny.pth'),
                 vqgan=osp.join(tmp_dir, 'vqgan_tiny.ckpt'))
    torch.save({'model': dict(sd)}, paths['addp'])
    torch.save({'model': {k[len('token_predictor.'):]: v for k, v in sd.items()
                          if k.startswith('token_predictor.')}}, paths['mage'])
    torch.save({'state_dict': {k[len('vqgan.'):]: v for k, v in sd.items()
                               if k.startswith('vqgan.')}}, paths['vqgan'])
    return paths


def build_fixture_model(tmp_dir: str) -> Tuple[torch.nn.Module, dict]:
    """Build the fixture-sized ADDP and load the official tiny state dict
    through the converter (official file -> converter -> our checkpoint)."""
    import addp_mm  # noqa: F401
    from mmpretrain.registry import MODELS

    from addp_mm.utils.checkpoint import load_external_state_dict, load_state_dict_strict
    paths = write_fixture_files(tmp_dir)
    dst = osp.join(tmp_dir, 'addp_converted.pth')
    meta = converter().convert_file(paths['addp'], dst)
    model = MODELS.build(fixture_model_cfg(paths['vqgan'], paths['mage']))
    model.init_weights()  # loads the frozen parts from their own files
    load_state_dict_strict(model, load_external_state_dict(dst, keys=('state_dict', )), dst)
    model.eval()
    return model, dict(meta, path=dst)


def spread_(t: torch.Tensor, std: float, gen: torch.Generator) -> None:
    with torch.no_grad():
        t.copy_(torch.randn(t.shape, generator=gen) * std)


def make_tiny_frozen_checkpoints(model_cfg: dict, out_dir: str, seed: int = 0) -> Tuple[str, str]:
    """Random (but non-degenerate) tokenizer/predictor checkpoints for a config.

    As in the fixture, the embedding tables are re-drawn at larger scales so
    that VQ assignments are distinct and the predictor's outputs are peaked
    (a default-initialised tiny predictor is nearly uniform).
    """
    import addp_mm  # noqa: F401
    from mmpretrain.registry import MODELS
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 100)
    tok_cfg = copy.deepcopy(dict(model_cfg['tokenizer']))
    tp_cfg = copy.deepcopy(dict(model_cfg['token_predictor']))
    tok_cfg['checkpoint'] = tp_cfg['checkpoint'] = None
    tok = MODELS.build(tok_cfg)
    tp = MODELS.build(tp_cfg)
    spread_(tok.quantize.embedding.weight, 0.35, gen)
    spread_(tp.token_emb.word_embeddings.weight, 0.5, gen)
    spread_(tp.token_emb.position_embeddings.weight, 0.5, gen)
    spread_(tp.decoder_pos_embed_learned, 0.5, gen)
    tok_path = osp.join(out_dir, 'vqgan_tiny.pth')
    tp_path = osp.join(out_dir, 'mage_tiny.pth')
    torch.save({'state_dict': tok.state_dict()}, tok_path)
    torch.save({'model': tp.state_dict()}, tp_path)
    return tok_path, tp_path


def read_key_list(name: str) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """``{key: (shape, dtype)}`` of ``tests/data/checkpoint_keys/<name>``."""
    out = {}
    with open(osp.join(KEYS_DIR, name)) as f:
        for line in f:
            if not line.strip():
                continue
            key, shape, dtype = line.split()
            dims = shape.strip('[]')
            out[key] = (tuple(int(d) for d in dims.split(',')) if dims else (), dtype)
    return out
