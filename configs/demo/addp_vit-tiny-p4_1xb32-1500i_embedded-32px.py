# Stage 3 of the embedded demo (tools/demo.py): ADDP pretraining on 32 px
# photo crops with the tokenizer and token predictor trained in stages 1-2.
# It is the tiny ADDP of configs/_base_/ (models/addp_vit-tiny-p8.py and the embedded-photo
# data, schedule and CPU runtime, shared with the test configs) at 32 px: patch 4 = the demo tokenizer's down-sampling, an 8x8 token grid,
# 128 codes, a 4-block 64-wide encoder and a 2-block decoder.
#
#   python tools/train.py configs/demo/addp_vit-tiny-p4_1xb32-1500i_embedded-32px.py \
#       --cfg-options model.tokenizer.checkpoint=work_dirs/demo/tokenizer/iter_600.pth \
#                     model.token_predictor.checkpoint=work_dirs/demo/predictor/iter_1200.pth
#
# Scaling up = the real configs (configs/addp/addp_vit-base-p16_*_in1k-256px.py): the
# official VQGAN (`tokenizer_checkpoint`) and MAGE-B/L predictor (`predictor_checkpoint`),
# ImageNet at 256 px (`data_root`), ViT-B/16 or L/16.
# Run first: python tools/demo.py (stages 1-2 write work_dirs/demo/tokenizer/iter_600.pth and work_dirs/demo/predictor/iter_1200.pth)
_base_ = [
    '../_base_/models/addp_vit-tiny-p8.py',
    '../_base_/datasets/embedded-photos_bs8_addp-64px.py',
    '../_base_/schedules/adamw_coslr-300i_bs8_addp-tiny.py',
    '../_base_/cpu_runtime.py',
]

# ---------------------------------------------------------------- user paths
tokenizer_checkpoint = 'work_dirs/demo/tokenizer/iter_600.pth'  # a VQGANTrainer checkpoint
predictor_checkpoint = 'work_dirs/demo/predictor/iter_1200.pth'  # a MAGEPredictorTrainer checkpoint
data_root = 'data/embedded_photos_32px'
# --------------------------------------------------------------------------

img_size = 32
patch_size = 4
num_tokens = (img_size // patch_size)**2
num_codes = 128
num_classes = 1
embed_dims = 64

# Toy-scale choices (the real configs keep the reference settings):
# - use_reliable_tokens=False (the paper's "no reliable-token conditioning"
#   ablation): with the appended ground-truth token embeddings, this small
#   decoder matches the toy teacher on its own and the pixel encoder learns
#   nothing (its linear probe ends below random init); without them the encoder
#   must read the visible tokens from x_t.
# - no dropout: the tiny model learns faster without it (linear probe after 600
#   iterations: 93.3% without, 90.2% with dropout 0.1).
# - performance='fast': SDPA, channels-last VQGAN, one batched predictor call
#   (fp32; about 1.1x per step here, docs/benchmarks.md).
model = dict(
    performance='fast',
    backbone=dict(img_size=img_size, patch_size=patch_size, embed_dims=embed_dims, num_layers=4,
                  num_heads=4, drop_rate=0., attn_drop_rate=0., tokenizer_drop_rate=0.),
    neck=dict(in_channels=embed_dims, embed_dims=embed_dims, num_layers=2, num_heads=4,
              num_classes=num_classes, drop_rate=0., attn_drop_rate=0.,
              use_reliable_tokens=False),
    # same architecture as configs/demo/vqgan_*.py
    tokenizer=dict(
        _delete_=True, type='VQGANTokenizer', ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
        z_channels=32, num_embeddings=num_codes, embed_dim=32, norm_num_groups=8,
        checkpoint=tokenizer_checkpoint),
    # same architecture as configs/demo/mage_*.py
    token_predictor=dict(
        num_codes=num_codes, num_classes=num_classes, num_tokens=num_tokens, embed_dims=64,
        depth=2, num_heads=4, decoder_embed_dims=64, decoder_depth=2, decoder_num_heads=4,
        mlp_ratio=4., fake_class_id=num_codes, checkpoint=predictor_checkpoint),
    # generation settings used by tools/sample.py (the reference's sampler at toy scale)
    sampler=dict(type='AlternatingDenoisingSampler', num_steps=8, schedule='cosine',
                 choice_temperature=3.0))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.5, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    sampler=dict(type='InfiniteSampler', shuffle=True),  # no 2 s pause per epoch
    dataset=dict(data_root=data_root, crop_size=img_size, num_train=64, num_val=16,
                 pipeline=train_pipeline))

max_iters = 1500
warmup_iters = 50
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', T_max=max_iters - warmup_iters, eta_min=0., by_epoch=False,
         begin=warmup_iters, end=max_iters),
]
train_cfg = dict(max_iters=max_iters)
auto_scale_lr = dict(base_batch_size=32)
default_hooks = dict(
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1, save_last=True))
# Online kNN monitor (docs/monitoring_and_export.md): every 100 iterations, weighted kNN
# (k=20, T=0.07) of the encoder's mean-pooled patch features, memory = the 896 train crops
# without augmentation, queries = the 224 val crops (the linear probe's val split); also at
# iteration 0, the encoder at its random init (the reference line of the demo report).
knn_dataset = dict(type='ADDPEmbeddedPhotos', data_root=data_root, crop_size=img_size,
                   num_train=64, num_val=16,
                   pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')])
custom_hooks = [
    dict(type='ADDPVisualizationHook', interval=max_iters, num_images=4),
    dict(type='ADDPKNNMonitorHook', interval=100, k=20, temperature=0.07, eval_at_start=True,
         cache_data=True,  # 1120 crops of 32 px: decoded once
         train_dataloader=dict(batch_size=128, dataset=dict(knn_dataset, split='train')),
         val_dataloader=dict(batch_size=128, dataset=dict(knn_dataset, split='val'))),
]
visualizer = dict(vis_backends=[dict(type='LocalVisBackend')])
