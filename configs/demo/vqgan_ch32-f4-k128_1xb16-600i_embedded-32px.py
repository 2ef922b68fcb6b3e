# Stage 1 of the embedded demo (tools/demo.py): train a small VQGAN tokenizer
# (the ADDP/MAGE architecture, scaled down) from scratch on 32 px crops of the
# photos bundled with scikit-image. 32 px / 4 = an 8x8 token grid, 128 codes.
#
#   python tools/train.py configs/demo/vqgan_ch32-f4-k128_1xb16-600i_embedded-32px.py
#
# The Runner checkpoint (iter_N.pth) is directly usable as
# `VQGANTokenizer(checkpoint=...)` (keys under `tokenizer.`), which is how the
# token-predictor and ADDP configs of the demo read it.
#
# Scaling up: set `img_size`, `ch`/`ch_mult`/`num_res_blocks`, `num_codes`,
# `embed_dim` (the official tokenizer is ch=128, ch_mult=(1,1,2,2,4),
# num_res_blocks=2, 1024 codes x 256 dims, 256 px) and replace the dataset by
# `dict(type='ImageNet', data_root='data/imagenet', split='train', ...)` or any
# `CustomDataset` folder of your domain. Optional losses:
#   perceptual: model.perceptual_loss=dict(checkpoint='checkpoints/vgg16.pth')
#       (a torchvision VGG16 state dict you saved; nothing is downloaded)
#   adversarial: model.discriminator=dict(base_channels=64, num_layers=3) with
#       the two-optimizer `optim_wrapper` shown at the bottom of this file.
custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

# ---------------------------------------------------------------- user paths
data_root = 'data/embedded_photos_32px'  # generated on first use from skimage/data
# --------------------------------------------------------------------------

img_size = 32
num_codes = 128
embed_dim = 32
tokenizer = dict(
    type='VQGANTokenizer',
    ch=32,
    ch_mult=(1, 2, 2),  # down-sampling 2**(3-1) = 4
    num_res_blocks=1,
    z_channels=embed_dim,
    num_embeddings=num_codes,
    embed_dim=embed_dim,
    norm_num_groups=8)

model = dict(
    type='VQGANTrainer',
    tokenizer=tokenizer,
    rec_loss='l1',
    codebook_weight=1.0,
    commitment_weight=0.25,
    perceptual_loss=None,
    discriminator=None,
    codebook_init='data',
    dead_code_restart=dict(interval=10, threshold=0.1, decay=0.9),
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor', mean=[0., 0., 0.], std=[255., 255., 255.], to_rgb=True))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.5, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
# 64 crops per photo, stored at the model resolution
dataset = dict(type='ADDPEmbeddedPhotos', data_root=data_root, crop_size=img_size, num_train=64,
               num_val=16)
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,  # needs workers; the codebases' tools default it to True
    # an endless shuffled stream: no epoch boundaries (mmengine pauses 2 s at each)
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(**dataset, split='train', pipeline=train_pipeline))

max_iters = 600
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-3, betas=(0.5, 0.9)))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_iters, eta_min=1e-4, by_epoch=False, begin=0,
         end=max_iters)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=max_iters, by_epoch=False, max_keep_ckpts=1,
                    save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
visualizer = dict(type='UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
log_processor = dict(window_size=10, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)

# Adversarial variant (single process; two optimizers):
# model.update(discriminator=dict(base_channels=32, num_layers=2), adv_weight=0.1,
#              disc_start_iter=max_iters // 2)
# optim_wrapper = dict(
#     constructor='VQGANMultiOptimWrapperConstructor',
#     tokenizer=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-3, betas=(0.5, 0.9))),
#     discriminator=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-3, betas=(0.5, 0.9))))
