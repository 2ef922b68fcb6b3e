"""Benchmarks of addp_mm (CPU or GPU), printed as markdown tables.

The library behind ``tools/benchmark.py`` (the command line) and
``tools/gpu_check.sh``. Usage::

    python tools/benchmark.py frozen    [--batch 2] [--img-size 256] [--repeat 5] [--append]
    python tools/benchmark.py train     [--config CFG] [--preset plain|fast|config] [--dtype fp32|bf16]
    python tools/benchmark.py trainstep [--config CFG] [--batch 64]
    python tools/benchmark.py sample    [--config CFG] [--preset plain|fast|config] [--dtype fp32|bf16]
    python tools/benchmark.py compare   [--config CFG] [--what train,sample] [--threads 2] [--append]
    python tools/benchmark.py summary   JSON... [--append]

Common options: ``--batch`` (``--batch-size``), ``--warmup``, ``--repeat``
(``--runs``), ``--threads``, ``--device cpu|cuda``, ``--append`` (to
``docs/benchmarks.md``, with the machine, library versions and load average),
``--note``, ``--json`` (raw result for ``summary``).

Each benchmark is a subcommand registered in :data:`BENCHMARKS`: a function
that adds its arguments to a sub-parser and a function that returns a
:class:`BenchResult` (or the finished markdown). The shared helpers time a
callable (warm-up, then the median of several runs), describe the machine and
library versions, render a markdown table and, with ``--append``, append it to
``docs/benchmarks.md``.

Benchmarks run with random weights (timings do not depend on the values), so
no checkpoint is needed.

Subcommands:
    frozen: VQGAN tokenizer encode / decode and MAGE token-predictor time at
        the official sizes (``configs/_base_/models/vqgan_f16_1024.py`` and
        ``mage_vit-base-p16.py`` by default).
    train: one ADDP training step (forward, backward, AdamW step) of the model
        in ``--config`` (official ViT-B by default, random weights), split into
        tokenizer encode, token predictor (both passes), tokenizer decode of
        x_t, encoder forward, decoder forward, backward and optimizer step,
        plus the peak memory of the step.
    trainstep: exactly what ``tools/train.py`` runs for ``--config``: the
        config's model (its own performance switches), its optimizer wrapper
        (``--amp`` as ``tools/train.py`` applies it) and cuDNN setting, and
        ``model.train_step`` on uint8 batches through the data preprocessor
        with the model's own mask draws. Reports ms/step, images/s, the peak
        memory and the model-FLOPs utilisation: the FLOPs of one step counted
        with ``torch.utils.flop_counter`` over the time of a step, against a
        large bf16 matmul measured on the same device in the same run.
    sample: one sampling step at 50 % masked tokens (encoder + decoder, VQ
        decode) and a full ``--steps`` (20) step unconditional sampling run
        (images/s), plus peak memory.
    compare: runs ``train`` and/or ``sample`` for the plain fp32 eager path,
        the optimised fp32 path and the optimised bf16 path in one process
        (interleaved), and prints them side by side with the speed-up ratios.
    ampcheck: a few AMP training steps through ``model.train_step`` and the
        optimizer wrapper ``tools/train.py --amp`` uses
        (:class:`~addp_mm.engine.amp.ADDPAmpOptimWrapper`, bf16); exits with
        status 1 unless every loss is finite.
    summary: one table from the ``--json`` files of ``trainstep``, ``train``
        and ``sample`` runs (what ``tools/gpu_check.sh`` prints), with the
        performance targets.

Switch presets (``addp_mm.models.utils.performance.PRESETS``): ``plain`` =
every performance switch off (the straightforward fp32 eager path); ``fast``
= SDPA attention, channels-last + fused SiLU in the VQGAN, both predictor
passes in one batch, no encoder / VQ decode while every token is masked;
``config`` = the switches the config itself sets (what ``tools/train.py`` and
``tools/sample.py`` run). ``--dtype bf16`` adds bf16 autocast around the whole
step and ``frozen_dtype='bf16'`` for the VQGAN and the predictor. ``--compile``
adds ``torch.compile`` of the VQGAN and the predictor.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the memory
allocated before the first measured step. On the CPU the peak resident set
size of the process (``VmHWM`` in ``/proc/self/status``, reset through
``/proc/self/clear_refs`` just before the first step) minus the resident size
at that point, in a process that runs only that configuration (``compare``
starts one subprocess per configuration for this); it includes gradients,
optimizer state and allocator caching. Where ``/proc`` cannot be used it falls
back to the growth of ``resource.getrusage().ru_maxrss``. (tracemalloc does not
see tensor memory.)
"""
from .ampcheck import add_ampcheck_args, ampcheck_wrapper_cfg, run_ampcheck
from .cli import BENCHMARKS, main
from .compare import (COMPARE_CONFIGS, TARGETS, add_compare_args, render_compare,
                      run_compare)
from .frozen import add_frozen_args, run_frozen
from .report import (DEFAULT_ADDP_CONFIG, DEFAULT_OUT, ROOT, TOOL, BenchResult,
                     append_report, environment, render)
from .summary import add_summary_args, run_summary
from .timing import (PhaseTimer, bf16_matmul_flops, count_step_flops, measure,
                     memory_method, peak_memory_mb, peak_memory_start)
from .train_sample import (SampleBench, TrainBench, add_model_args, add_sample_args,
                           add_train_args, apply_config, build_addp, run_sample,
                           run_train)
from .trainstep import add_trainstep_args, build_train_path, run_trainstep

__all__ = [
    'BENCHMARKS', 'COMPARE_CONFIGS', 'DEFAULT_ADDP_CONFIG', 'DEFAULT_OUT', 'ROOT', 'TARGETS',
    'TOOL', 'BenchResult', 'PhaseTimer', 'SampleBench', 'TrainBench', 'add_ampcheck_args',
    'add_compare_args', 'add_frozen_args', 'add_model_args', 'add_sample_args',
    'add_summary_args', 'add_train_args', 'add_trainstep_args', 'ampcheck_wrapper_cfg',
    'append_report', 'apply_config', 'bf16_matmul_flops', 'build_addp', 'build_train_path',
    'count_step_flops', 'environment', 'main', 'measure', 'memory_method', 'peak_memory_mb',
    'peak_memory_start', 'render', 'render_compare', 'run_ampcheck', 'run_compare',
    'run_frozen', 'run_sample', 'run_summary', 'run_train', 'run_trainstep'
]
