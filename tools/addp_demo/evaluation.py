"""In-process checks and pictures of the stages' results, and the margins
of the ADDP encoder over random init."""
import hashlib
import os.path as osp
from typing import Dict, List, Sequence

from .stages import DemoError


def tensors_digest(ckpt: str, prefix: str) -> str:
    """SHA-1 over the tensors under ``prefix`` of a checkpoint (sorted keys)."""
    import torch
    from addp_mm.utils.checkpoint import load_external_state_dict
    sd = load_external_state_dict(ckpt, keys=('state_dict', ))
    h = hashlib.sha1()
    keys = sorted(k for k in sd if k.startswith(prefix))
    if not keys:
        raise DemoError(f'{ckpt} has no "{prefix}" weights')
    for k in keys:
        h.update(k[len(prefix):].encode())
        h.update(sd[k].detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def upscale(src: str, dst: str, factor: int) -> str:
    from PIL import Image
    with Image.open(src) as im:
        im.resize((im.width * factor, im.height * factor), Image.NEAREST).save(dst)
    return dst


def evaluate_tokenizer(ckpt: str, cfg_path: str, data_root: str, out_png: str) -> dict:
    """Reconstruct val crops with the trained tokenizer loaded the way the
    ADDP config loads it; PSNR, L1, codebook usage and a picture."""
    import numpy as np
    import torch
    from mmengine.config import Config
    from PIL import Image

    import addp_mm  # noqa: F401
    from mmengine.logging import MMLogger
    from mmpretrain.registry import MODELS
    MMLogger.get_instance('addp_demo', log_level='WARNING')  # quiet init/load messages
    cfg = Config.fromfile(cfg_path, import_custom_modules=False)
    tok_cfg = dict(cfg.model.tokenizer, checkpoint=ckpt)
    tok = MODELS.build(tok_cfg)
    tok.init_weights()
    lines = open(osp.join(data_root, 'meta', 'val.txt')).read().split('\n')
    paths = [osp.join(data_root, ln.split()[0]) for ln in lines if ln.strip()]
    imgs = torch.stack([
        torch.from_numpy(np.array(Image.open(p).convert('RGB'))).permute(2, 0, 1).float() / 255.
        for p in paths])
    with torch.no_grad():
        ids, quant = tok.encode(imgs)
        rec = tok.decode(quant).clamp(0, 1)
    mse = ((rec - imgs)**2).mean().item()
    usage = ids.unique().numel() / tok.num_embeddings
    pick = torch.linspace(0, len(imgs) - 1, 14).long()
    row = lambda t: np.concatenate(list((t.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)), 1)  # noqa
    pic = np.concatenate([row(imgs[pick]), row(rec[pick])], 0)
    Image.fromarray(pic).resize((pic.shape[1] * 3, pic.shape[0] * 3), Image.NEAREST).save(out_png)
    return dict(psnr=10 * np.log10(1. / max(mse, 1e-12)), l1=(rec - imgs).abs().mean().item(),
                codebook_usage=usage, num_val_images=len(imgs))


def stack_strips(step_pngs: List[str], dst: str, factor: int = 3) -> str:
    from PIL import Image
    ims = [Image.open(p).convert('RGB') for p in step_pngs]
    w, h = max(i.width for i in ims), sum(i.height for i in ims)
    canvas = Image.new('RGB', (w, h))
    y = 0
    for im in ims:
        canvas.paste(im, (0, y))
        y += im.height
    canvas.resize((w * factor, h * factor), Image.NEAREST).save(dst)
    return dst



def dense_summary(runs: Dict[str, List[dict]], metrics: Sequence[str]) -> dict:
    """Per metric: the paired margins (ADDP minus random init, same seed), their
    mean, sample standard deviation (None for one seed), min and max."""
    a, r = runs['addp'], runs['random']
    out = dict(seeds=[x['seed'] for x in a], addp_runs=a, random_runs=r, metrics={})
    for who, rs in (('addp', a), ('random', r)):
        for when in ('first', 'last'):
            vals = [x.get(f'train_loss_{when}') for x in rs]
            out[f'{who}_train_loss_{when}'] = (sum(vals) / len(vals)
                                               if vals and None not in vals else None)
    for k in metrics:
        paired = [x[k] - y[k] for x, y in zip(a, r)]
        n = len(paired)
        mean = sum(paired) / n
        std = (sum((d - mean)**2 for d in paired) / (n - 1))**0.5 if n > 1 else None
        out['metrics'][k] = dict(
            addp_mean=sum(x[k] for x in a) / n, random_mean=sum(y[k] for y in r) / n,
            paired_margins=paired, margin=mean, margin_std=std, min_margin=min(paired),
            max_margin=max(paired))
    return out


def transfer_summary(runs: Dict[str, List[dict]]) -> dict:
    """Means over the probe seeds and the margin (ADDP minus random init)."""
    def mean(xs: List[float]) -> float:
        return sum(xs) / len(xs)
    a, r = runs['addp'], runs['random']
    paired = [x['top1'] - y['top1'] for x, y in zip(a, r)]
    return dict(
        seeds=[x['seed'] for x in a], addp_runs=a, random_runs=r,
        addp_top1=mean([x['top1'] for x in a]), random_top1=mean([x['top1'] for x in r]),
        addp_top5=mean([x['top5'] for x in a]), random_top5=mean([x['top5'] for x in r]),
        margin=mean(paired), paired_margins=paired, min_paired_margin=min(paired))


