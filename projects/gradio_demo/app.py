"""A browser page for ADDP: sample a grid, inpaint a marked region, watch the steps.

    python projects/gradio_demo/app.py                       # the checkpoint `make demo` trained
    python projects/gradio_demo/app.py --config CFG --checkpoint CKPT [--device cuda] [--port 7860]

Without ``--config``/``--checkpoint`` it serves the ADDP model of the embedded
demo: ``configs/demo/addp_vit-tiny-p4_1xb32-1500i_embedded-32px.py`` with the
last checkpoint in ``work_dirs/demo/addp/`` (``--demo-dir`` changes the folder).
The page has two tabs:

* **Sample**: a grid of unconditional samples and the alternating denoising
  steps of the first one (x_t above, the mask below, one column a step);
* **Inpaint**: upload an image, paint over the region to regenerate (or give a
  box), and get the result with its steps.

All work is done by :class:`addp_mm.apis.ADDPGenerator`; the functions of
:class:`DemoApp` take and return numpy images, so they run (and are tested)
without Gradio. Gradio is imported only by :func:`build_ui`.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo', 'addp_vit-tiny-p4_1xb32-1500i_embedded-32px.py')
DEMO_DIR = osp.join(ROOT, 'work_dirs', 'demo')
SCHEDULES = ('cosine', 'linear')


def demo_checkpoint(demo_dir: str = DEMO_DIR) -> str:
    """The last ADDP checkpoint of a ``make demo`` run (``<demo_dir>/addp/``)."""
    import glob
    import re
    wd = osp.join(demo_dir, 'addp')
    marker = osp.join(wd, 'last_checkpoint')
    if osp.isfile(marker):
        with open(marker) as f:
            path = f.read().strip()
        if osp.isfile(path):
            return path
    ckpts = sorted(glob.glob(osp.join(wd, 'iter_*.pth')),
                   key=lambda p: int(re.findall(r'iter_(\d+)', p)[-1]))
    if not ckpts:
        raise FileNotFoundError(
            f'no ADDP checkpoint in {wd!r}: run `make demo` first, or pass --config CFG '
            '--checkpoint CKPT (an ADDP pretraining/generation config and its checkpoint)')
    return ckpts[-1]


def upscale(img: np.ndarray, min_side: int = 256) -> np.ndarray:
    """Nearest-neighbour enlargement so small samples stay visible (integer factor)."""
    f = max(1, int(np.ceil(min_side / max(1, min(img.shape[:2])))))
    return img if f == 1 else img.repeat(f, axis=0).repeat(f, axis=1)


def editor_to_image_and_mask(value) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """An ``ImageEditor`` value (``background`` + painted ``layers``) or a plain
    image -> (RGB uint8 image, bool mask of painted pixels or None)."""
    if value is None:
        raise ValueError('upload an image first')
    if isinstance(value, dict):
        bg = value.get('background')
        if bg is None:
            bg = value.get('composite')
        if bg is None:
            raise ValueError('upload an image first')
        bg = np.asarray(bg)
        mask = None
        for layer in value.get('layers') or []:
            if layer is None:
                continue
            layer = np.asarray(layer)
            painted = layer[..., 3] > 0 if layer.ndim == 3 and layer.shape[2] == 4 else layer.any(-1) \
                if layer.ndim == 3 else layer > 0
            mask = painted if mask is None else (mask | painted)
        img = bg[..., :3] if bg.ndim == 3 else np.repeat(bg[..., None], 3, axis=2)
        return np.ascontiguousarray(img.astype(np.uint8)), mask
    img = np.asarray(value)
    img = img[..., :3] if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img.astype(np.uint8)), None


class DemoApp:
    """The page's actions over one :class:`ADDPGenerator`.

    Args:
        config (str): ADDP pretraining/generation config.
        checkpoint (str, optional): Its checkpoint; None = random weights.
        device (str, optional): Defaults to CUDA when available.
    """

    def __init__(self, config: str, checkpoint: Optional[str], device: Optional[str] = None) -> None:
        from addp_mm.apis import ADDPGenerator
        self.generator = ADDPGenerator(config, pretrained=checkpoint, device=device)
        self.config, self.checkpoint = config, checkpoint
        self.default_steps = int(self.generator.sampler.num_steps)

    @property
    def image_size(self) -> int:
        return self.generator.image_size

    def _options(self, steps, schedule, temperature) -> dict:
        if schedule not in SCHEDULES:
            raise ValueError(f'schedule must be one of {SCHEDULES}, got {schedule!r}')
        return dict(num_steps=int(steps), schedule=schedule,
                    choice_temperature=float(temperature))

    def sample(self, num_images: int = 16, seed: int = 0, steps: Optional[int] = None,
               schedule: str = 'cosine', temperature: float = 3.0) -> Tuple[np.ndarray, np.ndarray]:
        """Unconditional samples -> (grid, steps of the first sample), uint8 RGB, enlarged."""
        out = self.generator(num_images=int(num_images), seed=int(seed), return_steps=True,
                             batch_size=int(num_images),
                             **self._options(steps or self.default_steps, schedule, temperature))
        return upscale(out['grid']), upscale(out['steps'][0], 128)

    def inpaint(self, editor_value, seed: int = 0, steps: Optional[int] = None,
                schedule: str = 'cosine', temperature: float = 3.0,
                box: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Regenerate the painted region (or ``box``, model-size pixels) of the image.

        Returns:
            tuple: (the model-size input with the region shaded, the result,
            its steps), uint8 RGB, enlarged.
        """
        from addp_mm.apis.image_io import fit_image
        image, mask = editor_to_image_and_mask(editor_value)
        use_box = box is not None and any(int(v) for v in box)
        if use_box:
            kw = dict(boxes=[tuple(int(v) for v in box)])
        elif mask is not None and mask.any():
            kw = dict(masks=[mask])
        else:
            raise ValueError('paint the region to regenerate on the image (or give a box)')
        out = self.generator([image], seed=int(seed), return_steps=True,
                             **kw, **self._options(steps or self.default_steps, schedule,
                                                   temperature))
        S, (h, w) = self.image_size, self.generator.grid_hw
        region = out['regions'][0].reshape(h, w).repeat(S // h, 0).repeat(S // w, 1)
        shown = (fit_image(image, S).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        shown[region] = (0.5 * shown[region] + 0.5 * np.array([255, 0, 255])).astype(np.uint8)
        return upscale(shown), upscale(out['images'][0]), upscale(out['steps'][0], 128)


def example_photo() -> Optional[np.ndarray]:
    """A photo to start from (scikit-image ships it), None if unavailable."""
    try:
        from skimage import data
        return data.chelsea()
    except ImportError:  # pragma: no cover - scikit-image is a requirement
        return None


def build_ui(app: DemoApp):
    """The Gradio page (imports gradio)."""
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')
    import gradio as gr

    S = app.image_size
    title = (f'ADDP: alternating denoising, generation and inpainting '
             f'({osp.basename(app.config)}, {S}x{S} px)')
    with gr.Blocks(title='ADDP demo') as page:
        gr.Markdown(f'## {title}\nEvery step decodes pixels from the current tokens and predicts '
                    'new tokens from those pixels. Checkpoint: '
                    f'`{app.checkpoint or "random weights"}`')
        with gr.Row():
            steps = gr.Slider(1, 64, value=app.default_steps, step=1, label='steps')
            schedule = gr.Radio(list(SCHEDULES), value='cosine', label='mask schedule')
            temperature = gr.Slider(0., 10., value=float(app.generator.sampler.choice_temperature),
                                    step=0.5, label='choice temperature')
            seed = gr.Number(value=0, precision=0, label='seed')
        with gr.Tab('Sample'):
            num = gr.Slider(1, 64, value=16, step=1, label='images')
            go = gr.Button('Sample', variant='primary')
            with gr.Row():
                grid = gr.Image(label='samples', type='numpy', format='png')
                strip = gr.Image(label='steps of the first sample (x_t above, mask below)',
                                 type='numpy', format='png')
            go.click(app.sample, [num, seed, steps, schedule, temperature], [grid, strip],
                     api_name='sample')
            # a first grid as soon as the page opens
            page.load(app.sample, [num, seed, steps, schedule, temperature], [grid, strip],
                      api_name=False)
        with gr.Tab('Inpaint'):
            with gr.Row():
                editor = gr.ImageEditor(label='image: paint the region to regenerate',
                                        value=example_photo(), type='numpy',
                                        sources=['upload', 'clipboard'])
                with gr.Column():
                    gr.Markdown(f'or a box in model pixels (0..{S}); all zero = use the painting')
                    top = gr.Number(value=0, precision=0, label='top')
                    left = gr.Number(value=0, precision=0, label='left')
                    bottom = gr.Number(value=0, precision=0, label='bottom')
                    right = gr.Number(value=0, precision=0, label='right')
                    go2 = gr.Button('Regenerate', variant='primary')
            with gr.Row():
                shown = gr.Image(label='input (region shaded)', type='numpy', format='png')
                result = gr.Image(label='result', type='numpy', format='png')
                strip2 = gr.Image(label='steps', type='numpy', format='png')

            def _inpaint(value, seed_, steps_, schedule_, temp_, t, l_, b, r):
                return app.inpaint(value, seed_, steps_, schedule_, temp_, box=(t, l_, b, r))

            go2.click(_inpaint, [editor, seed, steps, schedule, temperature, top, left, bottom,
                                 right], [shown, result, strip2], api_name='inpaint')
    return page


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='ADDP sampling and inpainting in the browser')
    p.add_argument('--config', default=None, help=f'ADDP config (default: {osp.relpath(DEMO_CONFIG, ROOT)})')
    p.add_argument('--checkpoint', default=None,
                   help='checkpoint (default: the last one of `make demo` in --demo-dir)')
    p.add_argument('--demo-dir', default=DEMO_DIR, help='work dir of `make demo`')
    p.add_argument('--random-weights', action='store_true',
                   help='no checkpoint: random weights (to try the page)')
    p.add_argument('--device', default=None, help="'cuda', 'cpu' (default: cuda if available)")
    p.add_argument('--host', default='127.0.0.1', help='address to serve on (default 127.0.0.1)')
    p.add_argument('--port', type=int, default=7860, help='port (default 7860)')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    config = args.config or DEMO_CONFIG
    if not osp.isfile(config):
        raise SystemExit(f'error: config file not found: {config!r}')
    checkpoint: Optional[str] = args.checkpoint
    if checkpoint is None and not args.random_weights:
        if args.config is not None:
            raise SystemExit('error: --config needs --checkpoint (or --random-weights)')
        try:
            checkpoint = demo_checkpoint(args.demo_dir)
        except FileNotFoundError as err:
            raise SystemExit(f'error: {err}')
    try:
        app = DemoApp(config, checkpoint, args.device)
    except (ValueError, OSError) as err:
        raise SystemExit(f'error: {err}')
    page = build_ui(app)
    print(f'serving {config} ({checkpoint or "random weights"}) on http://{args.host}:{args.port}')
    page.launch(server_name=args.host, server_port=args.port, show_error=True)


if __name__ == '__main__':
    main()
