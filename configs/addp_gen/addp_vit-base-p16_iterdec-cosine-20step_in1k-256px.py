# ADDP ViT-B/16 unconditional generation on ImageNet 256x256 (reference ``main_generate.py``, release
# generate_addp_base_steps20.sh): 20 alternating-denoising steps, cosine mask
# schedule, choice temperature 6.0 annealed linearly to 0, token temperature 1,
# no top-p, total batch 64. Paper: FID 8.9 / IS 95.3 (50k samples vs the 50k
# 256x256 ImageNet-val PNGs, torch-fidelity).
#
#   python tools/test.py configs/addp_gen/addp_vit-base-p16_iterdec-cosine-20step_in1k-256px.py CKPT
#   python tools/sample.py configs/addp_gen/addp_vit-base-p16_iterdec-cosine-20step_in1k-256px.py CKPT --num 64
#
# CKPT: our pretraining checkpoint, or the official addp-vit-base-16.pth
# converted with tools/model_converters/addp_to_mm.py (it holds the VQGAN too).
# Run first: this config evaluates and samples a trained model (tools/test.py, tools/sample.py above); train one with configs/addp/addp_vit-base-p16_32xb128-amp-coslr-1600e_in1k-256px.py
_base_ = ['../addp/addp_vit-base-p16_32xb128-amp-coslr-1600e_in1k-256px.py']

# the generation dataset/metric/sampler live in addp_mm (datasets.generation is
# imported explicitly so the config works whatever addp_mm.datasets exports)
custom_imports = dict(imports=['addp_mm', 'addp_mm.datasets.generation'], allow_failed_imports=False)

# ---------------------------------------------------------------- user paths
# torch-fidelity's Inception-v3 weights (download once from
# https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth);
# override with --cfg-options test_evaluator.inception_weights=PATH
inception_weights = 'checkpoints/weights-inception-2015-12-05-6726825d.pth'
# FID reference: the folder written by tools/dataset_converters/prepare_imagenet_val256.py,
# or its statistics from `tools/fid.py FOLDER --save-stats FILE.npz` (faster). None = IS only.
fid_reference = 'data/imagenet_val256.npz'
# also keep the generated PNGs (None = do not write them)
save_dir = None
num_samples = 50000  # one per ImageNet val image, as in the paper

# ------------------------------------------------------------------- model
model = dict(
    # every weight comes from the generation checkpoint: the frozen parts' own
    # files are not needed (and the token predictor is not used at inference)
    require_frozen_checkpoints=False,
    tokenizer=dict(checkpoint=None),
    token_predictor=dict(checkpoint=None),
    sampler=dict(
        type='AlternatingDenoisingSampler',
        num_steps=20,
        schedule='cosine',
        choice_temperature=6.0,
        temperature_strategy='linear',
        token_temperature=1.0,
        top_p=1.0,
        seed=0))

# -------------------------------------------------------------------- data
test_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,  # needs workers; the codebases' tools default it to True
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),  # SelfSupDataPreprocessor needs stacked inputs
    dataset=dict(type='ADDPGenerationDataset', num_samples=num_samples))
test_evaluator = dict(
    type='ADDPGenerationMetric',
    inception_weights=inception_weights,
    reference=fid_reference,
    save_dir=save_dir)
test_cfg = dict(type='TestLoop')
custom_hooks = []
