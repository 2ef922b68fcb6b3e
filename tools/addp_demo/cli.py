"""The demo's command line."""
import argparse
from typing import Optional, Sequence

from .stages import DENSE_ORDER


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The demo's options from ``argv`` (default: ``sys.argv[1:]``), checked."""
    p = argparse.ArgumentParser(description='Run the embedded ADDP demo end to end')
    p.add_argument('--work-dir', default='work_dirs/demo', help='output folder')
    p.add_argument('--fast', action='store_true',
                   help='reduced iteration counts (the test suite runs this)')
    p.add_argument('--num-samples', type=int, default=None,
                   help='images to generate (default 16, 4 with --fast)')
    p.add_argument('--probe-seeds', type=int, default=None,
                   help='linear probes per encoder, seeds 0..N-1; the margin is the mean over '
                   'them (default 3, 1 with --fast)')
    p.add_argument('--dense-seeds', type=int, default=None,
                   help='detection / segmentation runs per encoder (ADDP and random init), seeds '
                   '0..N-1 (default 3, 1 with --fast)')
    p.add_argument('--skip-dense', action='store_true',
                   help='stop after the transfer stage (no detection / segmentation runs)')
    p.add_argument('--threads', type=int, default=None,
                   help='intra-op threads of every stage (default: $OMP_NUM_THREADS, else 1)')
    p.add_argument('--jobs', type=int, default=None,
                   help='runs at a time for the linear probes and the dense comparison (their '
                   'runs are independent); default: as many as fit on the CPU cores at --threads '
                   'each, at most 2. The numbers do not depend on it')
    p.add_argument('--data-only', action='store_true',
                   help='write the photo crops and the synthetic COCO/ADE sets under '
                   '<work-dir>/data, then stop')
    p.add_argument('--dense-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='extra --cfg-options for every detection / segmentation run of both '
                   'encoders (ablations, e.g. model.backbone.frozen_stages=4); REPORT.md lists them')
    p.add_argument('--from-stage', choices=DENSE_ORDER, default=None,
                   help='re-run only this dense stage and the ones after it on the ADDP '
                   'checkpoint of an earlier run in --work-dir (its summary.json); the earlier '
                   'stages, their numbers and wall times are taken from that run')
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error('--threads must be at least 1')
    if args.jobs is not None and args.jobs < 1:
        p.error('--jobs must be at least 1')
    if args.probe_seeds is not None and args.probe_seeds < 1:
        p.error('--probe-seeds must be at least 1')
    if args.dense_seeds is not None and args.dense_seeds < 1:
        p.error('--dense-seeds must be at least 1')
    bad = [o for o in args.dense_options if '=' not in o]
    if bad:
        p.error(f'--dense-options takes KEY=VALUE pairs (as --cfg-options does), got {bad}')
    if args.dense_options and args.skip_dense:
        p.error('--dense-options changes the dense runs; it cannot be combined with --skip-dense')
    if args.from_stage and args.skip_dense:
        p.error('--from-stage re-runs dense stages; it cannot be combined with --skip-dense')
    return args

