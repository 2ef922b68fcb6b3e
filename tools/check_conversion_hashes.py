"""Hash every tensor that the official-format conversions and encoder loaders produce.

A refactoring check: converting the official-format files that the tests build
(``tests/data/addp_official_tiny_v1.pt`` and the converter tests' VQGAN / MAGE
files) and loading them into every model must give bit-identical tensors
before and after a change of the code. The script converts and loads them with
the current code and writes (``--save``) or compares (``--compare``) the
sha256 of each tensor.

Covered: ``tools/model_converters/addp_to_mm.py`` on the official ADDP file,
the VQGAN and MAGE converters on their official files, the full ADDP model
loaded from the converted file, and the downstream encoders
(``ADDPVisionTransformer`` with and without the pretraining norms, with a
resized position table as the segmentation encoder, ``ADDPViTDetBackbone``) loaded
from the official and the converted files. Encoder tensors are also hashed without
their names (sorted hashes per encoder), so a renamed but equal tensor still matches.

Usage::

    python tools/check_conversion_hashes.py --save hashes.json
    python tools/check_conversion_hashes.py --compare hashes.json
"""
import argparse
import hashlib
import json
import os.path as osp
import sys
import tempfile
from typing import Callable, Dict

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
for _p in (ROOT, osp.join(ROOT, 'tests')):  # tests/helpers: the fixture model and official layouts
    if _p not in sys.path:
        sys.path.insert(0, _p)


def tensor_hash(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f'{t.dtype}{tuple(t.shape)}'.encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()


def hash_dict(sd: Dict[str, torch.Tensor]) -> Dict[str, str]:
    return {k: tensor_hash(v) for k, v in sorted(sd.items())}


def _encoders(tmp: str, addp_file: str, converted: str) -> Dict[str, Callable]:
    from helpers.addp import load_fixture

    from addp_mm.models.backbones import ADDPViTDetBackbone, ADDPVisionTransformer
    a = load_fixture()['meta']['config']['addp']
    arch = dict(embed_dims=a['embed_dim'], num_layers=a['depth'], num_heads=a['num_heads'],
                feedforward_channels=int(a['embed_dim'] * a['mlp_ratio']))
    det_arch = dict(embed_dims=a['embed_dim'], num_layers=a['depth'], num_heads=a['num_heads'])
    size, patch = a['img_size'], a['patch_size']

    def vit(path, **kw):
        kw.setdefault('img_size', size)
        return ADDPVisionTransformer(arch=arch, patch_size=patch, pretrained=path, **kw)

    def det(path, **kw):
        return ADDPViTDetBackbone(arch=det_arch, img_size=size * 2, pretrain_img_size=size,
                                  patch_size=patch, window_size=2, pretrained=path, **kw)

    return {
        'vit_official': lambda: vit(addp_file),
        'vit_converted_norms': lambda: vit(converted, use_tokenizer_norm=True, final_norm=True),
        'vit_resized_featmap': lambda: vit(converted, img_size=size * 2, out_type='featmap',
                                           out_indices=(0, a['depth'] - 1)),
        'vit_init_cfg': lambda: ADDPVisionTransformer(
            arch=arch, img_size=size, patch_size=patch,
            init_cfg=dict(type='Pretrained', checkpoint=converted)),
        'seg_featmap_official': lambda: vit(addp_file, img_size=size * 2, out_type='featmap',
                                            out_indices=(0, a['depth'] - 1)),
        'vitdet_official': lambda: det(addp_file),
        'vitdet_converted_tokenizer_norm': lambda: det(converted, use_tokenizer_norm=True),
    }


def collect() -> Dict[str, Dict[str, str]]:
    from helpers.addp import build_fixture_model, converter, load_fixture
    from helpers.tokenizers import official_mage_sd, official_vqgan_sd

    import addp_mm  # noqa: F401
    from addp_mm.models.target_generators.mage_predictor import convert_mage_state_dict
    from addp_mm.models.tokenizers.vqgan import convert_vqgan_state_dict
    out: Dict[str, Dict[str, str]] = {}
    sd = load_fixture()['state_dict']['addp']
    converted, dropped = converter().convert_addp_state_dict(sd)
    out['addp_to_mm'] = hash_dict(converted)
    out['addp_to_mm_dropped'] = {k: '' for k in sorted(dropped)}
    out['vqgan_converter'] = hash_dict(convert_vqgan_state_dict(official_vqgan_sd())[0])
    out['mage_converter'] = hash_dict(convert_mage_state_dict(official_mage_sd())[0])
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model, meta = build_fixture_model(tmp)
        out['addp_model_loaded'] = hash_dict(model.state_dict())
        addp_file = osp.join(tmp, 'addp_official_tiny.pth')
        for name, build in _encoders(tmp, addp_file, meta['path']).items():
            torch.manual_seed(0)
            enc = build()
            enc.init_weights()
            # only the loaded tensors: freshly initialised ones depend on the init order
            loaded = set(enc.pretrained_report['loaded'])
            out['encoder_' + name] = dict(
                sorted_hashes=sorted(tensor_hash(v) for k, v in enc.state_dict().items()
                                     if k in loaded))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--save', help='write the hashes to this JSON file')
    group.add_argument('--compare', help='compare with the hashes in this JSON file')
    args = parser.parse_args()
    hashes = collect()
    if args.save:
        with open(args.save, 'w') as f:
            json.dump(hashes, f, indent=1, sort_keys=True)
        print(f'{sum(len(v) for v in hashes.values())} hashes in {len(hashes)} groups -> '
              f'{args.save}')
        return 0
    with open(args.compare) as f:
        ref = json.load(f)
    bad = []
    for group_name in sorted(set(ref) | set(hashes)):
        if ref.get(group_name) != hashes.get(group_name):
            bad.append(group_name)
    for group_name in bad:
        a, b = ref.get(group_name) or {}, hashes.get(group_name) or {}
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        print(f'DIFFERENT {group_name}: {diff[:8]}{" ..." if len(diff) > 8 else ""}')
    print('all hashes equal' if not bad else f'{len(bad)} group(s) differ')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
