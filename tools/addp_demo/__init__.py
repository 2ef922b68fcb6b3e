"""The embedded demo behind ``tools/demo.py`` (``make demo``).

Modules: :mod:`.stages` (the configs and budgets of the stages),
:mod:`.processes` (running them as ``tools/train.py`` / ``tools/sample.py``
processes and reading their logs), :mod:`.evaluation` (in-process checks,
pictures and margins), :mod:`.report` (``REPORT.md``), :mod:`.cli` (the
command line), :mod:`.upstream` (stages 1-5) and :mod:`.pipeline` (the
whole run).
"""
