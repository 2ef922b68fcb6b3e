# Stage 2 of the embedded demo (tools/demo.py): MAGE-style masked token
# modelling. A small MAGETokenPredictor learns to predict the frozen demo
# tokenizer's 8x8 token grids of 32 px photo crops (variable mask ratio from a
# truncated normal, loss on masked positions). The predictor is then the
# frozen "teacher" of ADDP pretraining (configs/demo/addp_*.py).
#
#   python tools/train.py configs/demo/mage_vit-tiny-d2_1xb32-1200i_embedded-32px.py \
#       --cfg-options model.tokenizer.checkpoint=work_dirs/demo/tokenizer/iter_600.pth
#
# The Runner checkpoint is directly usable as MAGETokenPredictor(checkpoint=...)
# (keys under `token_predictor.`). Scaling up: the MAGE-B predictor is
# embed_dims=768, depth=12, num_heads=12, decoder 768 x 8 blocks x 16 heads,
# num_codes=1024, num_classes=1000, num_tokens=256, fake_class_id=1100, trained
# with drop_tokens=True on ImageNet at 256 px with the official tokenizer.
# Run first: python tools/demo.py (stage 1 writes the tokenizer work_dirs/demo/tokenizer/iter_600.pth)
_base_ = ['./vqgan_ch32-f4-k128_1xb16-600i_embedded-32px.py']

# ---------------------------------------------------------------- user paths
tokenizer_checkpoint = 'work_dirs/demo/tokenizer/iter_600.pth'  # a VQGANTrainer checkpoint
# --------------------------------------------------------------------------

num_tokens = (32 // 4)**2  # img_size / tokenizer down-sampling, squared
num_codes = 128
num_classes = 1  # class-id slots of the vocabulary (unconditional: one "fake" class)
# a top-level dict so tools/model_converters/mage_to_mm.py --config can read it
token_predictor = dict(
    type='MAGETokenPredictor',
    num_codes=num_codes,
    num_classes=num_classes,
    num_tokens=num_tokens,
    embed_dims=64,
    depth=2,
    num_heads=4,
    decoder_embed_dims=64,
    decoder_depth=2,
    decoder_num_heads=4,
    mlp_ratio=4.,
    drop_rate=0.1,
    fake_class_id=num_codes)
model = dict(
    _delete_=True,
    type='MAGEPredictorTrainer',
    # the demo tokenizer (same architecture as the stage-1 config), frozen, trained weights
    tokenizer=dict(
        type='VQGANTokenizer', ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=32,
        num_embeddings=num_codes, embed_dim=32, norm_num_groups=8,
        checkpoint=tokenizer_checkpoint),
    token_predictor=token_predictor,
    mask_ratio_min=0.5,
    mask_ratio_max=1.0,
    mask_ratio_mu=0.55,
    mask_ratio_std=0.25,
    drop_tokens=False,
    label_smoothing=0.1,
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor', mean=[0., 0., 0.], std=[255., 255., 255.], to_rgb=True))

train_dataloader = dict(batch_size=32)
max_iters = 1200
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.95), weight_decay=0.05),
    clip_grad=dict(max_norm=3.0),
    # same groups as mmengine's default constructor, without a warning per frozen tensor
    constructor='ADDPFrozenAwareOptimWrapperConstructor',
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., flat_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', T_max=max_iters - 20, eta_min=1e-5, by_epoch=False, begin=20,
         end=max_iters)
]
train_cfg = dict(max_iters=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
