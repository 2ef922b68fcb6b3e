"""Helpers shared by the tests (not test modules).

``tests/`` is on ``sys.path`` (``pythonpath`` in ``pytest.ini``), so a test
imports them as ``from helpers.detection import write_tiny_coco``:

- ``addp``: the tiny ADDP config, the reference fixture model, frozen-part
  checkpoints and the checkpoint converter.
- ``generation``: a tiny ADDP with random weights for sampling, ``run_tool``.
- ``tokenizers``: official-layout VQGAN / MAGE state dicts, small tokenizer
  configs, real photo crops.
- ``performance``: tiny models for the performance-switch tests.
- ``detection`` / ``segmentation``: tiny COCO / ADE20k datasets from real
  photos, encoder checkpoints, ``tools/train.py`` / ``tools/test.py`` runners.

- ``checkout``: the paths of the source checkout (``REPO_ROOT``, ``TEST_DATA``,
  ``TOOLS``, ``tools_on_path``) and ``run_tool``.

Paths inside the repository come from ``helpers.checkout``, never from a test
file's own location.
"""
