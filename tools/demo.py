"""The embedded demo: the whole ADDP story on real images, on a CPU, from scratch.

``make demo`` runs this script. Every stage is an ordinary config under
``configs/demo/`` run as a subprocess through ``tools/train.py`` or
``tools/sample.py``; outputs go to ``--work-dir`` (``work_dirs/demo``):

1. ``tokenizer/``    VQGAN tokenizer trained from scratch (VQGANTrainer);
2. ``predictor/``    MAGE-style token predictor on its tokens (MAGEPredictorTrainer);
3. ``addp/``         ADDP pretraining with both frozen;
4. ``samples/``      unconditional generation: a grid and per-step denoising strips;
5. ``transfer_*``    linear probe of the ADDP encoder vs the same encoder randomly
                     initialised: "which photo does this 32 px crop come from";
6. ``detection_*``, ``segmentation_*``  Mask R-CNN / UperNet on small
                     COCO/ADE-format datasets made from the real textures, each
                     from the ADDP encoder and from the same encoder randomly
                     initialised, same budget, several seeds.

The data is generated on first use under ``<work-dir>/data`` from the photos
bundled with scikit-image (no download). The last step writes
``<work-dir>/REPORT.md`` (losses, metrics, images, wall times) and
``<work-dir>/summary.json`` (the same numbers, machine-readable).

Examples::

    python tools/demo.py                       # full demo (~22 min on an idle 2-core CPU)
    python tools/demo.py --fast --work-dir work_dirs/demo_fast   # CI-sized run
    python tools/demo.py --from-stage detection   # re-run only the dense comparison
    # an ablation of the segmentation comparison on a copy of a finished run:
    cp -r work_dirs/demo work_dirs/demo_frozen
    python tools/demo.py --work-dir work_dirs/demo_frozen --from-stage segmentation \
        --dense-options model.backbone.frozen_stages=4
    python tools/demo.py --threads 4           # more intra-op threads on an idle machine
    python tools/demo.py --data-only           # only write the datasets under <work-dir>/data

Threads: every stage runs with ``--threads`` intra-op threads (``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``torch.set_num_threads``). The
default is the value of ``OMP_NUM_THREADS`` if set, else 1: the demo's models are
tiny, and on a busy 2-core machine one thread was ten times faster per ADDP step
(0.52 s) than torch's default (5.0 s). The linear probes and the dense runs are
independent processes and run ``--jobs`` at a time (default: what fits on the
cores at ``--threads`` each, at most 2); their numbers do not depend on it.
"""
import os.path as osp
import sys
import warnings

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
for _p in (ROOT, osp.join(ROOT, 'tools')):  # addp_mm and tools/addp_demo
    if _p not in sys.path:
        sys.path.insert(0, _p)
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from addp_demo.pipeline import main  # noqa: E402

if __name__ == '__main__':
    main()
