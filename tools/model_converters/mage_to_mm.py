"""Convert an official MAGE checkpoint to an mmengine token-predictor checkpoint.

``mage-vitb-1600.pth`` / ``mage-vitl-1600.pth`` are ``{'model': ...}`` with the
key names of :class:`addp_mm.models.tokenizers.MAGETokenPredictor`. The
converter drops the documented-unused keys (``cls_token``, ``pos_embed``,
``mask_token``, ``decoder_pos_embed``, ``patch_embed.*``, ``decoder_pred.*``
and the embedded ``vqgan.*`` tokenizer copy), checks every remaining key and
shape strictly against the configured model, and writes
``{'state_dict': ..., 'meta': ...}``. Files are read with
``torch.load(weights_only=True)``. An official ADDP release is accepted too
(its ``token_predictor.*`` part is used).

Example::

    python tools/model_converters/mage_to_mm.py checkpoints/mage-vitb-1600.pth \\
        checkpoints/mage_vit-base-p16_mm.pth \\
        --config configs/_base_/models/mage_vit-base-p16.py \\
        --compare-vqgan checkpoints/vqgan_jax_strongaug.ckpt

The embedded ``vqgan.*`` copy is never written into the output: the tokenizer
loads its own file. ``--compare-vqgan`` reports whether that copy equals a
given tokenizer file. Missing keys, shape mismatches or unexpected keys that
are not documented as unused make the tool exit with status 1. The destination
is checked before the work and written atomically (temporary name + rename).
``--format safetensors`` (or a ``.safetensors`` destination) writes the same
tensors as a ``.safetensors`` file, with ``meta`` as JSON in its metadata.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from vqgan_to_mm import build_meta_model  # noqa: E402

DEFAULT_CONFIG = osp.join(ROOT, 'configs', '_base_', 'models', 'mage_vit-base-p16.py')


def compare_vqgan(mage_sd: dict, vqgan_path: str) -> str:
    """Compare the MAGE file's ``vqgan.*`` copy with a tokenizer file."""
    from addp_mm.models.tokenizers.vqgan import convert_vqgan_state_dict
    from addp_mm.utils.checkpoint import load_external_state_dict
    prefix = next((p for p in ('token_predictor.vqgan.', 'vqgan.')
                   if any(k.startswith(p) for k in mage_sd)), None)
    if prefix is None:
        return 'vqgan copy: the MAGE file holds no vqgan.* keys'
    copy, _, _ = convert_vqgan_state_dict(mage_sd, prefix)
    ref, _, _ = convert_vqgan_state_dict(
        load_external_state_dict(vqgan_path, keys=('state_dict', 'model')))
    only_copy, only_ref = sorted(set(copy) - set(ref)), sorted(set(ref) - set(copy))
    if only_copy or only_ref:
        return (f'vqgan copy: DIFFERENT KEYS from {vqgan_path}: only in MAGE file '
                f'{only_copy[:5]}, only in tokenizer file {only_ref[:5]}')
    bad = [k for k in copy if copy[k].shape != ref[k].shape]
    if bad:
        return f'vqgan copy: DIFFERENT SHAPES, e.g. {bad[:5]}'
    diff = max(float((copy[k].double() - ref[k].double()).abs().max()) for k in copy)
    verdict = 'identical' if diff == 0 else 'DIFFERENT'
    return (f'vqgan copy: {len(copy)} tensors, {verdict} to {vqgan_path} (max abs diff '
            f'{diff:.3g}); it is not written to the output either way')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official MAGE file, e.g. mage-vitb-1600.pth')
    parser.add_argument('dst', help='output mmengine checkpoint (.pth or .safetensors)')
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='config holding the token_predictor dict (sizes to check against); '
                        'defaults to configs/_base_/models/mage_vit-base-p16.py')
    parser.add_argument('--cfg-key', default='token_predictor', help='name of the dict in --config')
    parser.add_argument('--prefix', default=None,
                        help='prefix of the predictor keys inside SRC (auto: none or "token_predictor.")')
    parser.add_argument('--add-prefix', default='',
                        help='prefix added to every output key, e.g. "token_predictor."')
    parser.add_argument('--compare-vqgan', default=None, metavar='VQGAN_FILE',
                        help='report whether the embedded vqgan.* copy equals this tokenizer file')
    parser.add_argument('--format', choices=('pth', 'safetensors'), default=None,
                        help='output format (default: from the extension of DST, else pth)')
    args = parser.parse_args(argv)

    from addp_mm.models.target_generators.mage_predictor import convert_mage_state_dict
    from addp_mm.utils.checkpoint import (CheckpointError, check_state_dict,
                                          load_external_state_dict)
    from addp_mm.utils.checkpoint_writer import resolve_format, save_converted
    from addp_mm.utils.outputs import OutputError, check_output_file
    try:
        fmt = resolve_format(args.dst, args.format)
        check_output_file(args.dst, 'destination')
        state_dict = load_external_state_dict(args.src, keys=('model', 'state_dict'),
                                              reject_converted=True)
        converted, dropped, prefix = convert_mage_state_dict(state_dict, args.prefix)
        model, model_cfg = build_meta_model(args.config, args.cfg_key)
        check_state_dict(model, converted, source=repr(args.src))
        report = compare_vqgan(state_dict, args.compare_vqgan) if args.compare_vqgan else None
    except (CheckpointError, OutputError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    n_vq = sum(k[len(prefix):].startswith('vqgan.') for k in dropped)
    outside = len(state_dict) - len(converted) - len(dropped)
    print(f'{args.src}: {len(converted)} token-predictor tensors'
          + (f' under prefix "{prefix}"' if prefix else '') + '; missing keys: 0; '
          f'unexpected keys: 0; dropped {len(dropped)} documented-unused keys '
          f'({n_vq} of them the embedded vqgan.* copy)'
          + (f'; ignored {outside} keys outside the prefix' if outside else ''))
    if report:
        print(report)
    out = {args.add_prefix + k: v.detach().clone().contiguous() for k, v in converted.items()}
    meta = dict(converter='tools/model_converters/mage_to_mm.py',
                source_file=osp.basename(args.src), source_prefix=prefix, model=model_cfg,
                key_prefix=args.add_prefix, dropped_keys=dropped,
                vqgan_copy='dropped (the tokenizer loads its own checkpoint)')
    save_converted(out, meta, args.dst, fmt)
    print(f'wrote {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
