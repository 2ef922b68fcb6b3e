"""The command line of the benchmarks: one sub-parser per entry of
:data:`BENCHMARKS`, the common options, and the report / ``--json`` output."""
import argparse
import json
import sys
from dataclasses import asdict
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .ampcheck import add_ampcheck_args, run_ampcheck
from .compare import add_compare_args, run_compare
from .frozen import add_frozen_args, run_frozen
from .report import DEFAULT_OUT, append_report, environment, render
from .summary import add_summary_args, run_summary
from .train_sample import add_sample_args, add_train_args, run_sample, run_train
from .trainstep import add_trainstep_args, run_trainstep

#: name -> (add_arguments, run). Add new benchmarks here.
BENCHMARKS: Dict[str, Tuple[Callable, Callable]] = {
    'frozen': (add_frozen_args, run_frozen),
    'train': (add_train_args, run_train),
    'sample': (add_sample_args, run_sample),
    'compare': (add_compare_args, run_compare),
    'ampcheck': (add_ampcheck_args, run_ampcheck),
    'trainstep': (add_trainstep_args, run_trainstep),
    'summary': (add_summary_args, run_summary),
}


def check_options(args: argparse.Namespace) -> None:
    """Refuse options that would do nothing, in one line; fill in their defaults."""
    if args.out is not None and not args.append:
        raise SystemExit('error: --out names the file --append writes to: add --append or '
                         'drop --out')
    if args.img_size is not None and args.benchmark != 'frozen':
        raise SystemExit(f'error: --img-size applies to the frozen benchmark only; '
                         f'{args.benchmark} uses the image size of its config: drop --img-size')
    args.out = args.out or DEFAULT_OUT
    args.img_size = args.img_size or 256


def main(argv: Optional[List[str]] = None) -> int:
    doc = sys.modules[__package__].__doc__  # the package docstring describes every subcommand
    parser = argparse.ArgumentParser(description=doc.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=doc.split('Subcommands:')[-1])
    sub = parser.add_subparsers(dest='benchmark', required=True)
    for name, (add_args, _) in BENCHMARKS.items():
        p = sub.add_parser(name)
        p.add_argument('--batch-size', '--batch', type=int, default=2)
        p.add_argument('--img-size', type=int, default=None,
                       help='frozen only, default 256 (train/sample use the config\'s size)')
        p.add_argument('--warmup', type=int, default=1 if name != 'frozen' else 2)
        p.add_argument('--runs', '--repeat', type=int, default=3 if name != 'frozen' else 5)
        p.add_argument('--full-runs', type=int, default=1,
                       help='sample/compare: timed full sampling runs')
        p.add_argument('--full-warmup', type=int, default=0,
                       help='sample/compare: untimed full sampling runs first (the one-step '
                       'warm-up already warms the kernels)')
        p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
        p.add_argument('--device', default='cpu')
        p.add_argument('--append', action='store_true', help='append the table to --out')
        p.add_argument('--out', default=None,
                       help=f'markdown file for --append (default {DEFAULT_OUT})')
        p.add_argument('--note', default='', help='free text added under the table')
        add_args(p)
    args = parser.parse_args(argv)
    check_options(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f'error: --device {args.device} but CUDA is not available '
                         f'(torch {torch.__version__}, built with CUDA {torch.version.cuda})')
    if args.warmup < 0 or args.runs < 1:
        raise SystemExit('error: need --warmup >= 0 and --repeat >= 1')
    result = BENCHMARKS[args.benchmark][1](args, device)
    if isinstance(result, str):
        text = result
    else:
        text = render(result, environment(device))
        if getattr(args, 'json', None):
            raw = asdict(result)
            raw.update(kind=args.benchmark, steps=getattr(args, 'steps', None),
                       batch=args.batch_size, label=getattr(args, 'label', None),
                       env=environment(device))
            with open(args.json, 'w') as f:
                json.dump(raw, f)
    print(text)
    if args.append:
        append_report(args.out, text)
        print(f'appended to {args.out}')
    return 0 if getattr(result, 'ok', True) else 1
