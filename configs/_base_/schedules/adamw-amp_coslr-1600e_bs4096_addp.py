# ADDP pretraining schedule (reference ``main_pretrain.py`` and
# ``configs/release/*/pretrain_*.sh``): AdamW (0.9, 0.95), lr 1.6e-3 for a total
# batch of 4096, wd 0.05, grad clip 3.0, mixed precision, 40 linear warm-up epochs then
# cosine to 0 at epoch 1600. A config with another length overrides
# `param_scheduler` and `train_cfg` (see the ViT-L config).
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
