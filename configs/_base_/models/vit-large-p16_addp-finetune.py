# ADDP ViT-L/16 encoder fine-tuned for ImageNet-1k classification: the ViT-B model
# with the ViT-L encoder of the official `finetune_addp_large_50ep.sh` (drop path 0.2).
_base_ = ['./vit-base-p16_addp-finetune.py']

# ----------------------------------------------------------------------------
# User path: the ADDP-L pretraining checkpoint (formats as in the ViT-B model)
pretrained_ckpt = 'checkpoints/addp-vit-large-16.pth'
# ----------------------------------------------------------------------------

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained_ckpt, prefix='backbone.')),
    head=dict(in_channels=1024))
