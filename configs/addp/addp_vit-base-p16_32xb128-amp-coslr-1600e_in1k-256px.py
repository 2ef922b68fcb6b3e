# ADDP ViT-B/16 pretraining, official recipe (reference
# ``configs/release/base/pretrain_*.sh``): ImageNet-1k, 256 px,
# 1600 epochs, total batch 4096 (32 GPUs x 128), AdamW (0.9, 0.95),
# lr 1.6e-3 @ 4096, wd 0.05, 40 warm-up epochs, cosine, grad clip 3.0, AMP.
#
# ---------------------------------------------------------------- user paths
# Frozen parts (nothing is downloaded at run time). Both files are linked from
# the MAGE README (github.com/LTH14/mage, "Pre-trained models" / "VQGAN
# tokenizer"), which the ADDP README points to (place them e.g. under
# checkpoints/):
#   vqgan_jax_strongaug.ckpt : the MaskGIT-style VQGAN tokenizer
#   mage-vitb-1600.pth       : MAGE ViT-B token predictor (ADDP-B's teacher)
# Run first: download vqgan_jax_strongaug.ckpt and mage-vitb-1600.pth into checkpoints/ and put ImageNet under data/imagenet/ (README: External checkpoints)
tokenizer_checkpoint = 'checkpoints/vqgan_jax_strongaug.ckpt'
predictor_checkpoint = 'checkpoints/mage-vitb-1600.pth'
# ImageNet-1k train split. Either a class-folder tree
#   <data_root>/<train_prefix>/<wnid>/*.JPEG       (train_ann_file = '')
# or a meta-list file, "relative/path.JPEG class_idx" per line, paths relative
# to <data_root>/<train_prefix> (the official ADDP layout: meta/train.txt):
#   train_ann_file = 'meta/train.txt'
data_root = 'data/imagenet/'
train_prefix = 'train'
train_ann_file = ''
# True reproduces the release: the frozen predictor's dropout is active while it
# produces x_t and the target (reference ``engine_pretrain.py`` trains in
# ``model.train(True)``). False = deterministic teacher.
predictor_train_dropout = True

# ------------------------------------------------------------------- model
custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

img_size = 256
patch_size = 16  # = the VQGAN down-sampling factor (one patch per token)
num_tokens = (img_size // patch_size)**2
num_codes = 1024
num_classes = 1000  # class-id slots of the MAGE vocabulary (1024 + 1000 + 1 = 2025)

model = dict(
    type='ADDP',
    # the VQGAN sees raw RGB in [0, 1]; the encoder's ImageNet normalisation
    # happens inside the model (after clamping x_t)
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor', mean=[0., 0., 0.], std=[255., 255., 255.], to_rgb=True,
        non_blocking=True),
    backbone=dict(
        type='ADDPViT', img_size=img_size, patch_size=patch_size, embed_dims=768, num_layers=12,
        num_heads=12, mlp_ratio=4., drop_rate=0.1, attn_drop_rate=0.1, tokenizer_drop_rate=0.1),
    neck=dict(
        type='ADDPDecoder', in_channels=768, embed_dims=768, num_layers=8, num_heads=16,
        mlp_ratio=4., drop_rate=0.1, attn_drop_rate=0.1, num_classes=num_classes),
    head=dict(type='ADDPLossHead',
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    tokenizer=dict(
        type='VQGANTokenizer', ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256,
        num_embeddings=num_codes, embed_dim=256, checkpoint=tokenizer_checkpoint),
    token_predictor=dict(
        type='MAGETokenPredictor', num_codes=num_codes, num_classes=num_classes,
        num_tokens=num_tokens, embed_dims=768, depth=12, num_heads=12, decoder_embed_dims=768,
        decoder_depth=8, decoder_num_heads=16, drop_rate=0.1,
        train_dropout=predictor_train_dropout, checkpoint=predictor_checkpoint),
    mask_sampler=dict(
        type='ADDPMaskSampler', ratio_min=0.5, ratio_max=1.0, ratio_mu=0.55, ratio_std=0.25,
        num_grid=100, max_offset=5),
    # speed only, same weights and checkpoints (addp_mm/models/utils/performance.py):
    # fused attention; under AMP the frozen VQGAN and predictor run in bf16 where
    # the hardware has it; on a GPU they are compiled (eager if compiling fails) and
    # the VQGAN stays NCHW; the decoder length is fixed. 'plain' = the fp32
    # reference path.
    performance='auto',
)

# -------------------------------------------------------------------- data
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.2, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        ann_file=train_ann_file,
        data_prefix=train_prefix,
        pipeline=train_pipeline))

# -------------------------------------------------------------- schedule
max_epochs = 1600
warmup_epochs = 40
# mixed precision: bf16 autocast on GPUs that have it (no loss scaling), fp16 with
# the reference's loss scaling on older GPUs, bf16 on CPUs only where it is native
# (else fp32; ADDP_BF16=1 forces bf16). The gradient norm is logged every 10 steps.
optim_wrapper = dict(
    type='ADDPAmpOptimWrapper',
    dtype='auto',
    loss_scale=dict(init_scale=2.**16, growth_interval=500),
    optimizer=dict(type='AdamW', lr=1.6e-3, betas=(0.9, 0.95), weight_decay=0.05),
    clip_grad=dict(max_norm=3.0),
    # timm param_groups_weight_decay: no decay on 1-D params (norms, biases)
    # and on `*.bias` (incl. mlm_layer.bias [1,1,V]); cls_token, mask_token,
    # every position table and token_emb ARE decayed (reference ``main_pretrain.py``).
    # mmengine's default groups without a warning per frozen tensor, merged into one
    # group per setting (one foreach AdamW pass each instead of one per tensor)
    constructor='ADDPFrozenAwareOptimWrapperConstructor',
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., flat_decay_mult=0.,
                       merge_groups=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=0., by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
# lr 1.6e-3 is for a total batch of 4096; --auto-scale-lr rescales it
auto_scale_lr = dict(base_batch_size=4096)

# --------------------------------------------------------------- runtime
default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
custom_hooks = [dict(type='ADDPVisualizationHook', interval=5000, num_images=4)]
env_cfg = dict(
    cudnn_benchmark=True,  # fixed input sizes: cuDNN picks the fastest VQGAN convolutions once
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
visualizer = dict(
    type='UniversalVisualizer',
    vis_backends=[dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])
log_processor = dict(window_size=10)
log_level = 'INFO'
load_from = None
resume = False
# the reference seeds every rank differently (seed + rank): one mask ratio per GPU
randomness = dict(seed=0, diff_rank_seed=True)
