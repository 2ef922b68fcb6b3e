# Tiny CPU config used by the tests: a 4-block, 32-wide ADDP ViT, UperNet
# with 16 channels, 64x64 crops, plain BN, a few iterations on a tiny
# ADE20k-format folder (images/ + annotations/ PNGs). Not a recipe.
# Run first: nothing writes data/tiny_ade/: the tests generate it (write_tiny_ade in tests/helpers/segmentation.py) and pass --cfg-options *.dataset.data_root=...; for a standalone run use configs/demo/upernet_addp-vit-tiny-p4_1xb8-200i_synthetic-ade-64px.py
_base_ = ['../addp_seg/upernet_addp-vit-base-p16_8xb2-amp-160k_ade20k-512x512.py']

data_root = 'data/tiny_ade/'  # tests override this with --cfg-options
crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=32, num_layers=4, num_heads=2,
                  feedforward_channels=64),
        img_size=crop_size,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        pretrained=None),
    neck=dict(embed_dim=32, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[32, 32, 32, 32], channels=16, pool_scales=(1, 2),
                     norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=32, channels=16, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(32, 32)))

# fixed 64x64 training inputs and a single 2-image batch, so the few test
# iterations see the same data and the loss curve reflects learning only
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='Resize', scale=crop_size, keep_ratio=False),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline, indices=2,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training')))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/validation',
                                  seg_map_path='annotations/validation')))
test_dataloader = val_dataloader

# plain OptimWrapper: AmpOptimWrapper needs a GPU
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='ADDPLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.65,
        flat_decay_mult=0.0,
        custom_keys={'pos_embed': dict(decay_mult=0.0), 'cls_token': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=1),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1, end=100, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=1000)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(by_epoch=False, interval=4))
log_processor = dict(window_size=1)
randomness = dict(seed=0)
