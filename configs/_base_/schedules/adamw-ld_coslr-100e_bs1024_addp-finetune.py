# Schedule of the ADDP ViT-B fine-tuning recipe (official `finetune_addp_base_100ep.sh`):
# AdamW with BEiT/MAE layer decay 0.65, 100 epochs (20 warm-up) at a total batch of 1024;
# lr 4e-3 = blr 1e-3 x 1024/256.
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
