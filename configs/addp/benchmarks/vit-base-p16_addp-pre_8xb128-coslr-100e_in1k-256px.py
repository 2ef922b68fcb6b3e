# ImageNet-1k fine-tuning of an ADDP ViT-B/16 encoder at 256x256: the recipe of the
# official `finetune_addp_base_100ep.sh` / `main_finetune.py`, reported
# top-1 83.9. Total batch 1024 (8 GPUs x 128); lr 4e-3 = blr 1e-3 x 1024/256.
#
#   CFG=configs/addp/benchmarks/vit-base-p16_addp-pre_8xb128-coslr-100e_in1k-256px.py
#   python tools/train.py $CFG --cfg-options model.backbone.init_cfg.checkpoint=checkpoints/addp-vit-base-16.pth
#   python tools/test.py $CFG work_dirs/<config name>/epoch_100.pth
# Run first: put ImageNet under data/imagenet/ and the ADDP-B release at checkpoints/addp-vit-base-16.pth (README: External checkpoints)
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)

# ----------------------------------------------------------------------------
# User paths
# ADDP pretraining checkpoint. Any of: our own pretraining output
# (work_dirs/addp_vit-base-p16_.../epoch_1600.pth, keys `backbone.*`), a converted
# official release, or the official release file itself (`{'model': ...}`,
# "ADDP-ViT-B" on the HF hub repo Changyao/ADDP, see the project README).
pretrained_ckpt = 'checkpoints/addp-vit-base-16.pth'
# ImageNet-1k. Two layouts are supported:
#  * meta-list (default): `<data_root>/meta/{train,val}.txt`, one "<relative path> <label>"
#    line per image, the paths relative to `<data_root>/{train,val}/`;
#  * class folders: `<data_root>/train/<class>/*.JPEG` and `<data_root>/val/<class>/*.JPEG`
#    (1000 folders each, labels by sorted folder name): set both ann files to ''.
data_root = 'data/imagenet/'
train_ann_file = 'meta/train.txt'
val_ann_file = 'meta/val.txt'
dataset_type = 'ImageNet'
# ----------------------------------------------------------------------------

img_size = 256
num_classes = 1000
embed_dims = 768

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ADDPVisionTransformer',
        arch='b',
        img_size=img_size,
        patch_size=16,
        drop_path_rate=0.1,
        # Reference fine-tuning: no pretraining tokenizer_norm and no final norm;
        # mean of the patch tokens -> fc_norm (ln2) -> head. Set both to True to keep
        # the two pretraining LayerNorms instead (see the README).
        use_tokenizer_norm=False,
        final_norm=False,
        out_type='avg_featmap',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained_ckpt, prefix='backbone.')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=num_classes,
        in_channels=embed_dims,
        # label smoothing 0.1 applied to the Mixup/CutMix soft targets, as timm's
        # Mixup(label_smoothing=0.1) + SoftTargetCrossEntropy
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=2e-5)]),
    # Mixup 0.8 / CutMix 1.0, one of the two per batch (timm switch_prob 0.5, prob 1.0)
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

# ---------------------------------------------------------------------- data
data_preprocessor = dict(
    num_classes=num_classes,
    mean=[123.675, 116.28, 103.53],  # ImageNet mean/std (RGB, 0-255)
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
bgr_mean = data_preprocessor['mean'][::-1]
bgr_std = data_preprocessor['std'][::-1]

# timm create_transform(is_training=True, auto_augment='rand-m9-mstd0.5-inc1',
# interpolation='bicubic', re_prob=0.25, re_mode='pixel', re_count=1)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),  # rounded bgr_mean
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',  # per-pixel normal noise = timm's 'pixel' mode
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]
# Eval at 256: Resize(256, bicubic) + CenterCrop(256), i.e. crop_pct 1.0.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=img_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='train',
        ann_file=train_ann_file,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='val',
        ann_file=val_ann_file,
        pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# ------------------------------------------------------------------ schedule
base_lr = 4e-3  # blr 1e-3 x 1024 / 256
min_lr = 1e-6
max_epochs = 100
warmup_epochs = 20
optim_wrapper = dict(
    type='AmpOptimWrapper',  # the reference trains with AMP (fp16) and no grad clipping
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=base_lr, weight_decay=0.05, betas=(0.9, 0.999)),
    # BEiT/MAE layer decay: cls_token/pos_embed/patch_embed layer 0, layers.i layer
    # i+1, the rest depth+1; lr scale = decay^(depth+1-layer).
    constructor='LearningRateDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.65,
        # MAE's param_groups_lrd: no weight decay for 1-D params (biases, norms)
        # and for cls_token / pos_embed.
        flat_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0),
        }))
# Per-iteration linear warmup from ~0, then half-cosine to min_lr. eta_min_ratio
# keeps MAE's per-layer floor min_lr x lr_scale.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, eta_min_ratio=min_lr / base_lr,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1024)

default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                                     save_best='accuracy/top1', rule='greater'))
randomness = dict(seed=0, diff_rank_seed=True)
