# The random-init baseline of the demo's transfer stage: exactly
# vit-tiny-p4_addp-pre_linear-probe_1xb64-150i_embedded-32px.py with the encoder left
# at its random initialisation (no pretrained weights), then frozen.
_base_ = ['./vit-tiny-p4_addp-pre_linear-probe_1xb64-150i_embedded-32px.py']

model = dict(backbone=dict(init_cfg=None))
