"""Benchmarks of addp_mm, printed as markdown tables (CPU or GPU).

    python tools/benchmark.py trainstep --config CFG --batch 64 --device cuda
    python tools/benchmark.py compare --threads 2 --append
    python tools/benchmark.py --help            # every subcommand

The benchmarks live in :mod:`addp_mm.utils.benchmark` (its docstring describes
each subcommand); this file is the command line.
"""
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from addp_mm.utils.benchmark import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
