"""Benchmarks of addp_mm, printed as markdown tables (CPU or GPU).

    python tools/benchmark.py trainstep --config CFG --batch 64 --device cuda
    python tools/benchmark.py compare --threads 2 --append
    python tools/benchmark.py --help            # every subcommand

The benchmarks live in ``tools/addp_benchmark/`` (its docstring describes
each subcommand), above the package they measure; this file is the command
line.
"""
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
for _p in (ROOT, osp.join(ROOT, 'tools')):  # addp_mm and tools/addp_benchmark
    if _p not in sys.path:
        sys.path.insert(0, _p)

from addp_benchmark import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
