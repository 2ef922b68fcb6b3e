# Schedule of the ADDP ViT-L fine-tuning recipe (official `finetune_addp_large_50ep.sh`):
# the ViT-B schedule with lr 1e-3 = blr 2.5e-4 x 1024/256, layer decay 0.8, 50 epochs
# (5 warm-up) at a total batch of 1024.
_base_ = ['./adamw-ld_coslr-100e_bs1024_addp-finetune.py']

base_lr = 1e-3  # blr 2.5e-4 x 1024 / 256
min_lr = 1e-6
max_epochs = 50
warmup_epochs = 5
optim_wrapper = dict(optimizer=dict(lr=base_lr), paramwise_cfg=dict(layer_decay_rate=0.8))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, eta_min_ratio=min_lr / base_lr,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
