"""tools/benchmark.py (train / sample / compare / ampcheck) and
tools/gpu_check.sh: the CPU-testable parts, on the tiny config (no timing
assertions)."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
from helpers.checkout import REPO_ROOT, run_tool

pytestmark = pytest.mark.e2e

TINY = osp.join(REPO_ROOT, 'configs', 'tests', 'addp_vit-tiny-p8_1xb8-300i_embedded-64px.py')
BENCH = osp.join(REPO_ROOT, 'tools', 'benchmark.py')
COMMON = ['--config', TINY, '--threads', '1', '--warmup', '0', '--repeat', '1']


def test_train_benchmark_phases_memory_and_append(tmp_path):
    out_md, out_json = tmp_path / 'bench.md', tmp_path / 'train.json'
    proc = run_tool([BENCH, 'train', *COMMON, '--preset', 'fast', '--dtype', 'bf16', '--append',
                     '--out', str(out_md), '--json', str(out_json)], cwd=str(tmp_path), timeout=300)
    raw = json.loads(out_json.read_text())
    names = [name for name, _ in raw['rows']]
    for phase in ('tokenizer encode (x0 -> z0)', 'token predictor (both passes)',
                  'tokenizer decode (x_t)', 'encoder forward', 'decoder forward', 'backward',
                  'optimizer step (AdamW)', '**training step (total)**'):
        assert phase in names, phase
    # the phases add up to the total (the remainder row is what is left)
    total = dict(raw['rows'])['**training step (total)**'][0]
    parts = sum(t[0] for n, t in raw['rows'] if not n.startswith('**'))
    assert abs(parts - total) < 1e-6 * max(total, 1)
    assert raw['metrics']['peak memory of the step (MiB)'] >= 0
    assert 'batch_predictor_passes=True' in raw['settings']['switches']
    assert 'frozen_dtype=bf16' in raw['settings']['switches']
    text = out_md.read_text()
    assert text.startswith('# addp_mm benchmarks') and 'torch 2' in text and 'machine' in text
    assert 'load average' in text and '| tokenizer encode' in text
    assert 'appended to' in proc.stdout


def test_sample_benchmark(tmp_path):
    out_json = tmp_path / 'sample.json'
    run_tool([BENCH, 'sample', *COMMON, '--preset', 'plain', '--steps', '4', '--json', str(out_json)],
             cwd=str(tmp_path), timeout=300)
    raw = json.loads(out_json.read_text())
    names = [name for name, _ in raw['rows']]
    assert {'encoder forward', 'decoder forward', 'VQ decode (next pixels)',
            '**one sampling step (total)**', '**4-step sampling of 2 images**'} <= set(names)
    assert raw['metrics']['images/s'] > 0
    assert 'skip_fully_masked=False' in raw['settings']['switches']


def test_compare_side_by_side_with_ratios_and_targets(tmp_path):
    proc = run_tool([BENCH, 'compare', *COMMON, '--what', 'train'], cwd=str(tmp_path), timeout=600)
    out = proc.stdout
    assert 'plain fp32 eager / optimised fp32' in out and 'plain fp32 eager / optimised bf16' in out
    row = next(line for line in out.splitlines() if line.startswith('| **training step (total)**'))
    assert row.count('x |') == 2  # two speed-up ratios
    assert '| training step, optimised fp32 >= 1.3x |' in out
    assert '| training step, bf16 >= 5x |' in out
    assert 'training-step peak memory' in out


def test_ampcheck_cpu_passes_with_finite_losses(tmp_path):
    proc = run_tool([BENCH, 'ampcheck', '--config', TINY, '--threads', '1', '--warmup', '1',
                     '--repeat', '2'], cwd=str(tmp_path), timeout=300, env={'ADDP_BF16': '1'})
    assert 'ADDPAmpOptimWrapper (bf16)' in proc.stdout
    assert 'PASS: 3 bf16 AMP steps' in proc.stdout


def test_trainstep_is_the_train_path_and_summary(tmp_path):
    """trainstep runs model.train_step with the config's (--amp) wrapper on uint8
    batches and reports images/s, peak memory and the MFU; summary tables it."""
    out_json = tmp_path / 'trainstep.json'
    proc = run_tool([BENCH, 'trainstep', '--config', TINY, '--amp', '--threads', '1', '--warmup',
                     '1', '--repeat', '2', '--matmul-size', '256', '--json', str(out_json),
                     '--label', 'train path'], cwd=str(tmp_path), timeout=300,
                    env={'ADDP_BF16': '0'})
    raw = json.loads(out_json.read_text())
    assert raw['kind'] == 'trainstep' and raw['batch'] == 2 and raw['label'] == 'train path'
    assert raw['settings']['optimizer wrapper'] == 'ADDPAmpOptimWrapper (float32 autocast)'
    assert 'model.train_step on uint8 batches' in raw['settings']['path']
    m = raw['metrics']
    assert m['images/s'] > 0 and m['peak memory of the step (MiB)'] >= 0
    # the FLOP count is the model's: > 0, and the MFU is achieved / measured peak
    assert m['model TFLOP per step (counted)'] > 0
    assert abs(m['MFU (%)'] - 100 * m['achieved TFLOP/s'] / m['bf16 matmul TFLOP/s (measured)']) < 1e-6
    assert 'bf16 disabled by ADDP_BF16=0' in proc.stdout + proc.stderr
    sample_json = tmp_path / 'sample.json'
    run_tool([BENCH, 'sample', *COMMON, '--preset', 'config', '--steps', '2', '--json',
              str(sample_json), '--label', 'train path'], cwd=str(tmp_path), timeout=300)
    proc = run_tool([BENCH, 'summary', str(out_json), str(sample_json), '--ref-train-ms', '1e9',
                     '--min-images-per-s', '1e9'], cwd=str(tmp_path), timeout=120)
    row = next(ln for ln in proc.stdout.splitlines() if ln.startswith('| addp_vit-tiny'))
    cells = [c.strip() for c in row.strip('|').split('|')]
    assert cells[1] == 'train path' and float(cells[3]) > 0 and float(cells[7]) > 0
    assert '| met |' in proc.stdout and '| MISSED |' in proc.stdout


def test_benchmark_clear_errors(tmp_path):
    proc = run_tool([BENCH, 'train', *COMMON, '--device', 'cuda'], cwd=str(tmp_path), timeout=120,
                    check=False, env={'CUDA_VISIBLE_DEVICES': ''})
    assert proc.returncode != 0 and 'CUDA is not available' in proc.stderr
    frozen_cfg = osp.join(REPO_ROOT, 'configs', '_base_', 'models', 'vqgan_f16_1024.py')
    proc = run_tool([BENCH, 'train', '--config', frozen_cfg], cwd=str(tmp_path), timeout=120,
                    check=False)
    assert proc.returncode != 0 and 'has no ADDP model' in proc.stderr


def test_gpu_check_fails_fast_without_cuda(tmp_path):
    script = osp.join(REPO_ROOT, 'tools', 'gpu_check.sh')
    assert subprocess.run(['bash', '-n', script]).returncode == 0
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OUT=str(tmp_path / 'gpu.md'), PYTHON=sys.executable)
    proc = subprocess.run(['bash', script], capture_output=True, text=True, timeout=120, env=env,
                          cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'no CUDA device visible' in proc.stderr
    assert not (tmp_path / 'gpu.md').exists()  # nothing half-written
