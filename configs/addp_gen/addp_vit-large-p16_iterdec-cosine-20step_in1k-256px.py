# ADDP ViT-L/16 unconditional generation on ImageNet 256x256 (release
# generate_addp_large_steps20.sh): 20 cosine steps, choice temperature 6.0
# (linear annealing), total batch 64. README: FID 7.6 / IS 105.1 (which of the
# two ViT-L schedules gave it is not stated in the reference).
#
# CKPT: the official addp-vit-large-16.pth converted with
# tools/model_converters/addp_to_mm.py, or our ViT-L pretraining checkpoint.
# Run first: this config evaluates and samples a trained model (tools/test.py, tools/sample.py); train one with configs/addp/addp_vit-large-p16_32xb128-amp-coslr-800e_in1k-256px.py
_base_ = [
    '../addp/addp_vit-large-p16_32xb128-amp-coslr-800e_in1k-256px.py',
]

# the generation dataset/metric/sampler live in addp_mm (datasets.generation is
# imported explicitly so the config works whatever addp_mm.datasets exports)
custom_imports = dict(imports=['addp_mm', 'addp_mm.datasets.generation'], allow_failed_imports=False)

# ---------------------------------------------------------------- user paths
# torch-fidelity's Inception-v3 weights (download once from
# https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth)
inception_weights = 'checkpoints/weights-inception-2015-12-05-6726825d.pth'
# folder from tools/dataset_converters/prepare_imagenet_val256.py or its .npz statistics
fid_reference = 'data/imagenet_val256.npz'
save_dir = None
num_samples = 50000
num_steps = 20
schedule = 'cosine'

model = dict(
    require_frozen_checkpoints=False,
    tokenizer=dict(checkpoint=None),
    token_predictor=dict(checkpoint=None),
    sampler=dict(
        type='AlternatingDenoisingSampler',
        num_steps=num_steps,
        schedule=schedule,
        choice_temperature=6.0,
        temperature_strategy='linear',
        token_temperature=1.0,
        top_p=1.0,
        seed=0))

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
