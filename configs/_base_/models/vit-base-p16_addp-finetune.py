# ADDP ViT-B/16 encoder fine-tuned for ImageNet-1k classification at 256x256: the
# model of the official `finetune_addp_base_100ep.sh` / `main_finetune.py`.
custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)

# ----------------------------------------------------------------------------
# User path: the ADDP pretraining checkpoint. Any of: our own pretraining output
# (work_dirs/addp_vit-base-p16_.../epoch_1600.pth, keys `backbone.*`), a converted
# official release, or the official release file itself (`{'model': ...}`,
# "ADDP-ViT-B" on the HF hub repo Changyao/ADDP, see docs/checkpoints.md).
pretrained_ckpt = 'checkpoints/addp-vit-base-16.pth'
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
        # the two pretraining LayerNorms instead (see docs/classification.md).
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
