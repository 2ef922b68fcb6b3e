"""FID / Inception Score between image folders or precomputed statistics.

Same arithmetic and feature network as ``fidelity --isc --fid`` (torch-fidelity,
the reference's protocol), with the Inception-v3 weights read from a
local file::

    # reference statistics once (the 50k 256x256 ImageNet-val PNGs)
    python tools/fid.py data/imagenet_val256 --save-stats data/imagenet_val256.npz \\
        --inception-weights weights-inception-2015-12-05-6726825d.pth

    # FID + IS of generated samples
    python tools/fid.py work_dirs/samples data/imagenet_val256.npz \\
        --inception-weights weights-inception-2015-12-05-6726825d.pth

GEN and REF are folders of images (searched recursively) or ``.npz`` files with
``mu``/``sigma`` (pytorch-fid format). IS needs GEN to be a folder.
"""
import argparse
import json
import os.path as osp
import sys

_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='FID / IS with torch-fidelity\'s Inception-v3 (offline)')
    p.add_argument('gen', help='generated images: a folder, or a .npz of statistics')
    p.add_argument('ref', nargs='?', default=None, help='reference: a folder or a .npz of statistics')
    p.add_argument('--inception-weights', required=True,
                   help='path of weights-inception-2015-12-05-6726825d.pth (torch-fidelity v0.2.0)')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--device', default=None, help='default: cuda if available, else cpu')
    p.add_argument('--save-stats', default=None, help='write the statistics of GEN (a folder) to this .npz')
    p.add_argument('--no-isc', action='store_true', help='skip the Inception Score')
    p.add_argument('--isc-splits', type=int, default=None,
                   help='splits of the Inception Score (default 10)')
    return p.parse_args(argv)


def check_options(args) -> None:
    """Refuse options that would do nothing, in one line each."""
    gen_is_stats = osp.isfile(args.gen) and args.gen.endswith('.npz')
    if gen_is_stats and args.save_stats:
        raise SystemExit('error: --save-stats writes the statistics of a GEN folder, and GEN is '
                         'already a statistics file: drop --save-stats')
    if args.isc_splits is not None and (args.no_isc or gen_is_stats):
        why = 'with --no-isc' if args.no_isc else 'when GEN is a statistics file'
        raise SystemExit(f'error: --isc-splits sets up the Inception Score, which is not computed '
                         f'{why}: drop --isc-splits')
    if args.isc_splits is None:
        args.isc_splits = 10
    elif args.isc_splits < 1:
        raise SystemExit(f'error: --isc-splits must be >= 1, got {args.isc_splits}')


def main(argv=None) -> dict:
    args = parse_args(argv)
    check_options(args)
    import torch

    from addp_mm.evaluation.fid import (INCEPTION_WEIGHTS_HELP, build_inception, compute_fid_is,
                                        feature_statistics, folder_features, frechet_distance,
                                        load_statistics, reference_statistics, save_statistics)
    if not osp.isfile(args.inception_weights):
        raise SystemExit(f'error: Inception weights file not found: {args.inception_weights!r}. '
                         f'{INCEPTION_WEIGHTS_HELP}')
    for name, path in (('GEN', args.gen), ('REF', args.ref)):
        if path is not None and not (osp.isdir(path) or osp.isfile(path)):
            raise SystemExit(f'error: {name} {path!r} is neither a folder nor a statistics file')
    if args.ref is None and not args.save_stats and args.no_isc:
        raise SystemExit('error: nothing to do: give REF for FID, drop --no-isc for IS, or --save-stats')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    net = build_inception(args.inception_weights, device)
    res = {}
    if osp.isfile(args.gen) and args.gen.endswith('.npz'):
        if args.ref is None:
            raise SystemExit('error: GEN is a statistics file; give REF to compute FID (IS needs images)')
        mu, sigma = load_statistics(args.gen)
        res['fid'] = frechet_distance(mu, sigma, *reference_statistics(args.ref, net, args.batch_size, True))
    else:
        feats, logits = folder_features(args.gen, net, args.batch_size, progress=True)
        if args.save_stats:
            save_statistics(args.save_stats, *feature_statistics(feats), num_images=feats.shape[0])
            print(f'saved statistics of {feats.shape[0]} images to {args.save_stats}')
        if args.ref is not None or not args.no_isc:
            res = compute_fid_is((feats, logits), args.ref, net, args.batch_size,
                                 compute_is=not args.no_isc,
                                 isc_splits=min(args.isc_splits, feats.shape[0]), progress=True)
    if res:
        print(json.dumps(res))
    return res


if __name__ == '__main__':
    main()
