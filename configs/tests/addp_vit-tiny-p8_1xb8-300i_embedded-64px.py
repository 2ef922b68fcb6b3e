# Tiny ADDP for tests and CPU demos: 64 px crops of the photos bundled with
# scikit-image (addp_mm's embedded dataset, generated on first use under
# data_root), an 8x8 token grid, a tiny VQGAN (64 codes) and a tiny MAGE-style
# predictor. The algorithm is the full ADDP step (same code path as ViT-B/L).
#
# ---------------------------------------------------------------- user paths
# Tiny frozen parts: there are no released tiny weights. The tests write random
# ones (make_tiny_frozen_checkpoints in tests/helpers/addp.py) and pass them
# with --cfg-options model.tokenizer.checkpoint=... model.token_predictor.checkpoint=...
# Run first: no tiny frozen weights exist; write random ones with make_tiny_frozen_checkpoints (tests/helpers/addp.py) and pass them with --cfg-options model.tokenizer.checkpoint=... model.token_predictor.checkpoint=...
tokenizer_checkpoint = 'checkpoints/addp_tiny/vqgan_tiny.pth'
predictor_checkpoint = 'checkpoints/addp_tiny/mage_tiny.pth'
data_root = 'data/embedded_photos'
# deterministic teacher for the demo (the release behaviour is True,
# reference ``engine_pretrain.py``)
predictor_train_dropout = False

custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

img_size = 64
patch_size = 8  # = VQGAN down-sampling factor 2**(len(ch_mult)-1)
num_tokens = (img_size // patch_size)**2
num_codes = 64
num_classes = 10

model = dict(
    type='ADDP',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor', mean=[0., 0., 0.], std=[255., 255., 255.], to_rgb=True),
    backbone=dict(
        type='ADDPViT', img_size=img_size, patch_size=patch_size, embed_dims=32, num_layers=2,
        num_heads=2, mlp_ratio=4., drop_rate=0.1, attn_drop_rate=0.1, tokenizer_drop_rate=0.1),
    neck=dict(
        type='ADDPDecoder', in_channels=32, embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=4.,
        drop_rate=0.1, attn_drop_rate=0.1, num_classes=num_classes),
    head=dict(type='ADDPLossHead',
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    tokenizer=dict(
        type='VQGANTokenizer', ch=8, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=32,
        norm_num_groups=4,
        num_embeddings=num_codes, embed_dim=32, checkpoint=tokenizer_checkpoint),
    token_predictor=dict(
        type='MAGETokenPredictor', num_codes=num_codes, num_classes=num_classes,
        num_tokens=num_tokens, embed_dims=32, depth=1, num_heads=2, decoder_embed_dims=32,
        decoder_depth=1, decoder_num_heads=2, drop_rate=0.1, fake_class_id=num_codes,
        train_dropout=predictor_train_dropout, checkpoint=predictor_checkpoint),
    mask_sampler=dict(
        type='ADDPMaskSampler', ratio_min=0.5, ratio_max=1.0, ratio_mu=0.55, ratio_std=0.25,
        num_grid=100, max_offset=5),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.2, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ADDPEmbeddedPhotos', data_root=data_root, split='train',
                 crop_size=img_size, pipeline=train_pipeline))

max_iters = 300
warmup_iters = 20
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=3e-3, betas=(0.9, 0.95), weight_decay=0.05),
    clip_grad=dict(max_norm=3.0),
    # same groups as mmengine's default constructor, without a warning per frozen tensor
    constructor='ADDPFrozenAwareOptimWrapperConstructor',
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., flat_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', T_max=max_iters - warmup_iters, eta_min=0., by_epoch=False,
         begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
auto_scale_lr = dict(base_batch_size=8)

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=100, by_epoch=False, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
custom_hooks = [dict(type='ADDPVisualizationHook', interval=100, num_images=2)]
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'))
visualizer = dict(
    type='UniversalVisualizer',
    vis_backends=[dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])
log_processor = dict(window_size=10, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, diff_rank_seed=True)
