"""Convert the official VQGAN tokenizer file to an mmengine checkpoint.

The official ``vqgan_jax_strongaug.ckpt`` (MAGE / ADDP release; tensors at the
top level or under ``'state_dict'``) already uses the key names of
:class:`addp_mm.models.tokenizers.VQGANTokenizer`, so the conversion only
selects the VQGAN keys, drops the documented-unused ones (``loss.*``), checks
every key and shape strictly against the configured model and writes
``{'state_dict': ..., 'meta': ...}``. The file is read with
``torch.load(weights_only=True)``.

Example::

    python tools/model_converters/vqgan_to_mm.py \\
        checkpoints/vqgan_jax_strongaug.ckpt checkpoints/vqgan_f16_1024_mm.pth

The converted file loads through the tokenizer's ``checkpoint=`` argument just
like the official one. ``--add-prefix tokenizer.`` writes keys in ADDP layout
(for ``init_cfg=dict(type='Pretrained', ...)`` of a whole ADDP model).
Missing keys, shape mismatches or unexpected keys that are not documented as
unused make the tool exit with status 1 and name the first offenders. The
destination is checked before the work and written atomically (temporary name
+ rename).
``--format safetensors`` (or a ``.safetensors`` destination) writes the same
tensors as a ``.safetensors`` file, with ``meta`` as JSON in its metadata.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DEFAULT_CONFIG = osp.join(ROOT, 'configs', '_base_', 'models', 'vqgan_f16_1024.py')


def build_meta_model(config: str, cfg_key: str) -> torch.nn.Module:
    """Build ``cfg[cfg_key]`` on the meta device (no memory, no checkpoint)."""
    from mmengine.config import Config

    import addp_mm  # noqa: F401  (registers the models)
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(config)
    if cfg_key not in cfg:
        raise SystemExit(f'error: config {config} has no {cfg_key!r} dict '
                         f'(top-level keys: {sorted(cfg.keys())})')
    model_cfg = cfg[cfg_key].copy()
    model_cfg['checkpoint'] = None
    with torch.device('meta'):
        return MODELS.build(model_cfg), model_cfg.to_dict()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official VQGAN file, e.g. vqgan_jax_strongaug.ckpt')
    parser.add_argument('dst', help='output mmengine checkpoint (.pth or .safetensors)')
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='config holding the tokenizer dict (sizes to check against); '
                        'defaults to configs/_base_/models/vqgan_f16_1024.py')
    parser.add_argument('--cfg-key', default='tokenizer', help='name of the dict in --config')
    parser.add_argument('--prefix', default=None,
                        help='prefix of the VQGAN keys inside SRC (auto-detected: none, '
                        '"tokenizer." or "vqgan.")')
    parser.add_argument('--add-prefix', default='',
                        help='prefix added to every output key, e.g. "tokenizer."')
    parser.add_argument('--format', choices=('pth', 'safetensors'), default=None,
                        help='output format (default: from the extension of DST, else pth)')
    args = parser.parse_args(argv)

    from addp_mm.models.tokenizers.vqgan import VQGAN_UNUSED_PREFIXES, convert_vqgan_state_dict
    from addp_mm.utils.checkpoint import (CheckpointError, check_state_dict,
                                          load_external_state_dict)
    from addp_mm.utils.checkpoint_writer import resolve_format, save_converted
    from addp_mm.utils.outputs import OutputError, check_output_file
    try:
        fmt = resolve_format(args.dst, args.format)
        check_output_file(args.dst, 'destination')
        state_dict = load_external_state_dict(args.src, keys=('state_dict', 'model'),
                                              reject_converted=True)
        converted, dropped, prefix = convert_vqgan_state_dict(state_dict, args.prefix)
        model, model_cfg = build_meta_model(args.config, args.cfg_key)
        check_state_dict(model, converted, source=repr(args.src))
    except (CheckpointError, OutputError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    outside = len(state_dict) - len(converted) - len(dropped)
    print(f'{args.src}: {len(converted)} VQGAN tensors'
          + (f' under prefix "{prefix}"' if prefix else '') + '; missing keys: 0; '
          f'unexpected keys: 0; dropped {len(dropped)} documented-unused keys '
          f'{VQGAN_UNUSED_PREFIXES}' + (f'; ignored {outside} keys outside the prefix' if outside else ''))
    out = {args.add_prefix + k: v.detach().clone().contiguous() for k, v in converted.items()}
    meta = dict(converter='tools/model_converters/vqgan_to_mm.py',
                source_file=osp.basename(args.src), source_prefix=prefix,
                model=model_cfg, key_prefix=args.add_prefix, dropped_keys=dropped)
    save_converted(out, meta, args.dst, fmt)
    print(f'wrote {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
