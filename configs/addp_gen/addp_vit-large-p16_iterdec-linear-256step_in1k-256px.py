# ADDP ViT-L/16 generation with 256 linear steps (release
# generate_addp_large_steps256_linear.sh, total batch 512): about one token is
# fixed per step. Everything else as the 20-step cosine config.
# Run first: this config evaluates and samples a trained model (tools/test.py, tools/sample.py); train one with configs/addp/addp_vit-large-p16_32xb128-amp-coslr-800e_in1k-256px.py
_base_ = ['./addp_vit-large-p16_iterdec-cosine-20step_in1k-256px.py']

model = dict(sampler=dict(num_steps=256, schedule='linear'))
test_dataloader = dict(batch_size=512)
