"""``REPORT.md``: the demo's numbers, pictures and findings in words."""
import os
import os.path as osp
from typing import List

from .plots import curves_section
from .stages import ROOT


def _fmt(v) -> str:
    if isinstance(v, float):
        return f'{v:.4g}'
    return str(v)


def _show_path(path: str, work_dir: str) -> str:
    path = str(path)
    if not osp.isabs(path):
        return path
    for base in (work_dir, ROOT):
        if path.startswith(base + os.sep):
            return osp.relpath(path, base)
    return path


DENSE_TITLES = {
    'detection': 'Mask R-CNN on synthetic COCO scenes (coin / horse, 128 px)',
    'segmentation': 'UperNet on synthetic ADE scenes (grass / gravel / brick / coin / horse, 64 px)',
}


def _metric_fmt(k: str) -> str:
    return '.3f' if k.startswith('coco/') else '.2f'


def dense_report(summary: dict) -> List[str]:
    """Section 6: per task and metric, per-seed values for both encoders, the
    paired margins, their mean and spread."""
    dense = summary.get('dense') or {}
    if not dense:
        return ['## 6. Detection and segmentation', '', 'Skipped (`--skip-dense`).', '']
    S = summary['stages']
    L = ['## 6. Transfer to dense tasks: ADDP encoder vs random init', '',
         'Each task is trained twice per seed with the same config, budget and seed (head '
         'initialisation, data order, augmentation): once with the backbone loaded from the '
         'ADDP checkpoint of stage 3 (`model.backbone.pretrained=<ckpt>`), once with the same '
         'backbone randomly initialised (`model.backbone.pretrained=None`). A margin is ADDP '
         'minus random init for the same seed; std is the sample standard deviation of the '
         'per-seed margins.', '']
    for task, d in dense.items():
        first = S.get(f'{task}_addp', {})
        L += [f'### {DENSE_TITLES.get(task, task)}', '']
        if first:
            opts = first.get('options')
            L += [f"`{_show_path(first['config'], summary['work_dir'])}`, {first['iters']} "
                  'iterations per run' + (', with `' + ' '.join(opts) + '`' if opts else '')
                  + '.', '']
        for k, m in d['metrics'].items():
            f = _metric_fmt(k)
            L += [f'| seed | ADDP-pretrained {k} | random init {k} | margin |',
                  '|---|---|---|---|']
            for x, y, dm in zip(d['addp_runs'], d['random_runs'], m['paired_margins']):
                L.append(f"| {x['seed']} | {x[k]:{f}} | {y[k]:{f}} | {dm:+{f}} |")
            L.append(f"| **mean** | **{m['addp_mean']:{f}}** | {m['random_mean']:{f}} "
                     f"| **{m['margin']:+{f}}** |")
            std = '-' if m['margin_std'] is None else f"{m['margin_std']:{f}}"
            verdict = 'ADDP better' if m['margin'] > 0 else 'ADDP NOT better'
            if m['margin'] > 0 and m['min_margin'] <= 0:
                verdict += ' on average, not for every seed'
            L += ['', f"{k} margin: **{m['margin']:+{f}}** (std {std}, min "
                  f"{m['min_margin']:+{f}}, max {m['max_margin']:+{f}}; {verdict}).", '']
            if m['margin_std'] is not None and abs(m['margin']) <= m['margin_std']:
                L += [f'The mean margin is smaller than its spread over seeds: with '
                      f"{len(d['seeds'])} seeds it cannot be told apart from seed noise.", '']
        L += _dense_diagnosis(task, d)
    return L


def _dense_diagnosis(task: str, d: dict) -> List[str]:
    """Plain words when ADDP does not win a metric, with the measured training
    losses of both inits (does the pretrained start fit the task faster?)."""
    losing = [k for k, m in d['metrics'].items() if m['margin'] <= 0]
    la, lr = d.get('addp_train_loss_last'), d.get('random_train_loss_last')
    fa, fr = d.get('addp_train_loss_first'), d.get('random_train_loss_first')
    L = []
    if la is not None and lr is not None:
        L += [f'Training loss (mean over seeds, first -> last logged): ADDP {fa:.3f} -> '
              f'{la:.3f}, random init {fr:.3f} -> {lr:.3f}.', '']
    if not losing:
        return L
    text = (f"**The ADDP encoder does NOT beat random init on {', '.join(losing)} here.** ")
    if la is not None and lr is not None:
        if la >= lr:
            text += ('Its runs also end with a training loss no lower than the random-init runs, '
                     'so at this scale the pretrained weights are not an easier starting point '
                     'for this task than a random initialisation in the same budget.')
        else:
            text += ('Its runs end with a lower training loss than the random-init runs but do '
                     'not score higher on the val scenes: the pretrained start fits the training '
                     'scenes faster without generalising better.')
    text += (' Ablations of this comparison (fine-tuning recipe, frozen encoder, pretraining '
             'resolution), how to re-run them with `--dense-options`, and what they show about '
             'why: `docs/demo/TRANSFER_ABLATIONS.md` in the repository.')
    return L + [text, '']


def _header(summary: dict) -> List[str]:
    """Title, mode, machine, wall time and how the runs were scheduled."""
    L = ['# ADDP embedded demo report', '',
         f"Mode: **{'fast (CI)' if summary['fast'] else 'full'}**, "
         f"{summary['cpu_count']} CPU cores, total wall time **{summary['total_wall_s'] / 60:.1f} min** "
         f"({summary['total_wall_s']:.0f} s).", '']
    if summary.get('jobs', 1) > 1:
        L += [f"The linear probes and the dense runs ran {summary['jobs']} at a time "
              f"(`--jobs {summary['jobs']}`, {summary.get('threads', 1)} thread(s) each), so their "
              'wall times below overlap and add up to more than the total.', '']
    resumed = summary.get('resumed')
    if resumed:
        L += [f"Stages from `{resumed['from_stage']}` on were re-run with `--from-stage "
              f"{resumed['from_stage']}` ({resumed['this_run_wall_s'] / 60:.1f} min) on the ADDP "
              'checkpoint of an earlier run in this folder; the earlier stages, their numbers and '
              f"wall times ({resumed['earlier_stages_wall_s'] / 60:.1f} min) are that run's, and "
              'the total is their sum.', '']
    return L


def _stage_tables(work_dir: str, summary: dict) -> List[str]:
    """Where each stage ran, how long, and its logged training values."""
    S = summary['stages']
    L = ['Every stage is an ordinary config under `configs/demo/` run through `tools/train.py` '
         '(or `tools/sample.py`); its folder holds the config that ran, the log (`stdout.log`) '
         'and the checkpoint. Data: crops of the photos bundled with scikit-image '
         '(`addp_mm/datasets/embedded.py`) and scenes made from them '
         '(`addp_mm/datasets/synthetic_dense.py`).', '',
         '## Stages', '',
         '| stage | config | iterations | s / iteration | wall time |', '|---|---|---|---|---|']
    for name, st in S.items():
        if st:
            spi = st.get('s_per_iter')
            L.append(f"| {name} | `{_show_path(st['config'], work_dir)}` "
                     f"| {st.get('iters', '-')} | {'-' if spi is None else f'{spi:.3f}'} "
                     f"| {st['wall_s']:.1f} s |")
    L += ['', '## Training losses', '',
          '| stage | value | first | last | min |', '|---|---|---|---|---|']
    for name in S:
        for key, v in S[name].get('losses', {}).items():
            L.append(f"| {name} | {key} | {_fmt(v['first'])} (iter {v['first_iter']}) | "
                     f"{_fmt(v['last'])} (iter {v['last_iter']}) | {_fmt(v['min'])} |")
    return L


def _tokenizer_section(summary: dict) -> List[str]:
    """Section 1 (reconstructions) and 2 (token predictor)."""
    S = summary['stages']
    tk = S['tokenizer'].get('eval', {})
    L = ['', '## 1. Tokenizer', '',
          f"Val crops (top) and their reconstructions through the 8x8 token grid (bottom): "
          f"PSNR **{tk.get('psnr', float('nan')):.2f} dB**, L1 {tk.get('l1', float('nan')):.4f}, "
          f"{100 * tk.get('codebook_usage', 0):.0f}% of the codebook used on "
          f"{tk.get('num_val_images', 0)} val crops.", '',
          '![tokenizer reconstructions](tokenizer_reconstructions.png)', '']
    pr = S['predictor'].get('losses', {}).get('acc_masked')
    if pr:
        L += ['## 2. Token predictor', '',
              f"Masked-token accuracy on training batches: {pr['first']:.3f} -> {pr['last']:.3f} "
              '(chance = 1/128).', '']
    return L


def _generation_section(summary: dict) -> List[str]:
    """Sections 3-4: the samples and the denoising strips."""
    g = summary['generation']
    return ['## 3-4. ADDP pretraining and generation', '',
          f"{g['num_samples']} unconditional samples ({g['num_steps']} alternating denoising steps), "
          'decoded by the stage-1 tokenizer '
          f"({'verified' if g['decoded_by_trained_tokenizer'] else 'NOT verified'}: the ADDP "
          f"checkpoint's tokenizer weights have digest `{g['addp_tokenizer_sha1'][:12]}`, the "
          f"trained tokenizer `{g['trained_tokenizer_sha1'][:12]}`).", '',
          '![sample grid](samples_grid.png)', '',
          'Denoising steps (left to right; top: pixels x_t, grey before the first decode; '
          'bottom: the mask, white = still masked):', '',
          '![denoising strips](denoising_strips.png)', '']


def _transfer_section(summary: dict) -> List[str]:
    """Section 5: the linear probes and the margin, with what it means."""
    t = summary['transfer']
    n = len(t['seeds'])
    L = ['## 5. Transfer: which photo does a crop come from? (14 classes)', '',
          'A linear probe (frozen encoder, mean-pooled patch features, BatchNorm, linear layer) '
          'trained on the train crops and evaluated on 224 val crops, for the ADDP-pretrained '
          'encoder and for the same encoder randomly initialised; '
          f"{n} probe seed(s) each (seed = probe initialisation and data order).", '',
          '| seed | ADDP-pretrained top-1 (%) | random init top-1 (%) | margin |',
          '|---|---|---|---|']
    for x, y, d in zip(t['addp_runs'], t['random_runs'], t['paired_margins']):
        L.append(f"| {x['seed']} | {x['top1']:.2f} | {y['top1']:.2f} | {d:+.2f} |")
    L += [f"| **mean** | **{t['addp_top1']:.2f}** | {t['random_top1']:.2f} | **{t['margin']:+.2f}** |",
          '', f"Margin: **{t['margin']:+.2f}** points "
          f"({'ADDP better' if t['margin'] > 0 else 'ADDP NOT better'}; smallest per-seed margin "
          f"{t['min_paired_margin']:+.2f}).", '',
          'The demo pretrains without reliable-token conditioning (`use_reliable_tokens=False`, '
          "one of the paper's ablations) and without dropout. With the reference decoder the "
          'appended ground-truth token embeddings already determine the toy teacher\'s target, so '
          'the decoder matches it alone and the pixel encoder gets almost no learning signal (its '
          'probe accuracy then ends below random init); without them the only route from the '
          'visible tokens to the prediction is the encoder reading x_t.', '']
    if t['margin'] <= 0:
        L += ['At this scale that is still not enough to beat random init on this probe. A '
              'randomly initialised ViT is close to a linear map of its patches, so its mean-pooled '
              'features already separate the 14 photos by colour statistics (about 96 % top-1); '
              'the toy pretraining (1500 steps, a weak teacher whose target is only ~0.3 nats '
              'sharper than the batch-average code distribution) moves the encoder away from that '
              'without yet giving it better features.', '']
    return L


def write_report(work_dir: str, summary: dict) -> str:
    """Write ``<work_dir>/REPORT.md`` from ``summary``; return its path."""
    L = (_header(summary) + _stage_tables(work_dir, summary) + curves_section(work_dir, summary)
         + _tokenizer_section(summary)
         + _generation_section(summary) + _transfer_section(summary))
    L += dense_report(summary)
    path = osp.join(work_dir, 'REPORT.md')
    with open(path, 'w') as f:
        f.write('\n'.join(L))
    return path


