# Tiny ADDP generation config for tests and CPU demos: the tiny pretraining
# model of configs/tests/addp_vit-tiny-p8_1xb8-300i_embedded-64px.py (64 px,
# 8x8 tokens), 8 cosine steps, a handful of samples. Checkpoints come from
# training that config (tools/train.py); there are no released tiny weights.
#
#   python tools/test.py configs/tests/addp_vit-tiny-p8_iterdec-cosine-8step_embedded-64px.py CKPT \
#       --cfg-options test_evaluator.inception_weights=PATH test_evaluator.reference=REF_DIR
# Run first: this config evaluates and samples a trained model (tools/test.py, tools/sample.py above); train one with configs/tests/addp_vit-tiny-p8_1xb8-300i_embedded-64px.py
_base_ = ['./addp_vit-tiny-p8_1xb8-300i_embedded-64px.py']

# the generation dataset/metric/sampler live in addp_mm (datasets.generation is
# imported explicitly so the config works whatever addp_mm.datasets exports)
custom_imports = dict(imports=['addp_mm', 'addp_mm.datasets.generation'], allow_failed_imports=False)

# ---------------------------------------------------------------- user paths
# torch-fidelity's Inception-v3 weights (download once from
# https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth)
inception_weights = 'checkpoints/weights-inception-2015-12-05-6726825d.pth'
# reference images (a folder) or statistics (.npz); None = IS only
fid_reference = None
save_dir = None
num_samples = 8

model = dict(
    require_frozen_checkpoints=False,
    tokenizer=dict(checkpoint=None),
    token_predictor=dict(checkpoint=None),
    sampler=dict(
        type='AlternatingDenoisingSampler',
        num_steps=8,
        schedule='cosine',
        choice_temperature=6.0,
        temperature_strategy='linear',
        token_temperature=1.0,
        top_p=1.0,
        seed=0))

test_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,  # needs workers; the codebases' tools default it to True
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),  # SelfSupDataPreprocessor needs stacked inputs
    dataset=dict(type='ADDPGenerationDataset', num_samples=num_samples))
test_evaluator = dict(
    type='ADDPGenerationMetric',
    inception_weights=inception_weights,
    reference=fid_reference,
    isc_splits=2,
    save_dir=save_dir)
test_cfg = dict(type='TestLoop')
custom_hooks = []
