# ADDP ViT-L/16 generation with 256 linear steps (release
# generate_addp_large_steps256_linear.sh, total batch 512): about one token is
# fixed per step. Everything else as the 20-step cosine config.
_base_ = ['./addp_vit-large-p16_iterdec-cosine-20step_in1k-256px.py']

model = dict(sampler=dict(num_steps=256, schedule='linear'))
test_dataloader = dict(batch_size=512)
