# ADDP ViT-B/16 pretraining, official recipe (reference
# ``configs/release/base/pretrain_*.sh``): ImageNet-1k, 256 px,
# 1600 epochs, total batch 4096 (32 GPUs x 128), AdamW (0.9, 0.95),
# lr 1.6e-3 @ 4096, wd 0.05, 40 warm-up epochs, cosine, grad clip 3.0, AMP.
#
# Frozen parts (nothing is downloaded at run time). Both files are linked from
# the MAGE README (github.com/LTH14/mage, "Pre-trained models" / "VQGAN
# tokenizer"), which the ADDP README points to; the paths are set in
# configs/_base_/models/ (override with --cfg-options model.tokenizer.checkpoint=...
# model.token_predictor.checkpoint=...):
#   checkpoints/vqgan_jax_strongaug.ckpt : the MaskGIT-style VQGAN tokenizer
#   checkpoints/mage-vitb-1600.pth       : MAGE ViT-B token predictor (ADDP-B's teacher)
# ImageNet: data/imagenet/train/<wnid>/*.JPEG, or the official meta list with
# --cfg-options train_dataloader.dataset.ann_file=meta/train.txt
# (configs/_base_/datasets/imagenet_bs128_addp-256px.py).
# Run first: download vqgan_jax_strongaug.ckpt and mage-vitb-1600.pth into checkpoints/ and put ImageNet under data/imagenet/ (docs/checkpoints.md: External checkpoints)
_base_ = [
    '../_base_/models/addp_vit-base-p16.py',
    '../_base_/datasets/imagenet_bs128_addp-256px.py',
    '../_base_/schedules/adamw-amp_coslr-1600e_bs4096_addp.py',
    '../_base_/default_runtime.py',
]

# train_dropout=True reproduces the release: the frozen predictor's dropout is
# active while it produces x_t and the target (reference ``engine_pretrain.py``
# trains in ``model.train(True)``). False = deterministic teacher.
# performance='auto': speed only, same weights and checkpoints
# (addp_mm/models/utils/performance.py): fused attention; under AMP the frozen
# VQGAN and predictor run in bf16 where the hardware has it; on a GPU they are
# compiled (eager if compiling fails) and the VQGAN stays NCHW; the decoder
# length is fixed. 'plain' = the fp32 reference path.
model = dict(token_predictor=dict(train_dropout=True), performance='auto')

custom_hooks = [dict(type='ADDPVisualizationHook', interval=5000, num_images=4)]
