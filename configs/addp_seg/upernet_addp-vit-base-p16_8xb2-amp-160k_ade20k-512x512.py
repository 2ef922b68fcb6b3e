# UperNet with an ADDP ViT-B/16 backbone on ADE20k, 512x512 crops, 160k
# iterations, batch 16 (8 GPUs x 2), AdamW lr 1e-4, wd 0.05, layer decay 0.65,
# poly schedule with 1500 linear warm-up iterations, drop path 0.1, outputs of
# blocks [3, 5, 7, 11] rescaled [4, 2, 1, 0.5] by Feature2Pyramid, UPerHead +
# auxiliary FCNHead, sliding-window test (512 crop, stride 341).
#
# ASSUMPTION: ADDP did not release its segmentation recipe; this is the MAE/BEiT
# UperNet protocol as in mmseg's `mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py`,
# assumed to be the one behind ADDP's reported ADE20k mIoU 48.1 (ViT-B).
#
# SyncBN: the heads/neck use SyncBN for multi-GPU runs. A non-distributed run
# (single GPU or CPU, tools/train.py without --launcher) gets plain BN
# automatically: mmengine's Runner reverts SyncBN when it is not distributed.
# Run first: put ADE20k under data/ade/ADEChallengeData2016 and the ADDP-B release at checkpoints/addp-vit-base-16.pth (docs/checkpoints.md: External checkpoints)
_base_ = [
    'mmseg::_base_/models/upernet_mae.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py'
]

custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)

# ADDP pretraining checkpoint (our Runner output, an official HF `Changyao/ADDP`
# release or an official fine-tuning file); download it yourself and put the
# local path here. Its 16x16 position grid is resized to 32x32 at load time.
pretrained = 'checkpoints/addp-vit-base-16.pth'

crop_size = (512, 512)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ADDPVisionTransformer',
        arch='b',
        img_size=crop_size,
        patch_size=16,
        out_type='featmap',  # stride-16 maps of the blocks below, cls token dropped
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.1,
        pretrained=pretrained),
    neck=dict(embed_dim=768, rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[768, 768, 768, 768], num_classes=150, channels=768,
                     norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=768, num_classes=150, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='ADDPLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.65,
        flat_decay_mult=0.0,  # no weight decay on biases / norms (MAE, BEiT)
        custom_keys={'pos_embed': dict(decay_mult=0.0), 'cls_token': dict(decay_mult=0.0)}))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

# 8 GPUs x 2 images = batch 16
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
