"""``python -m nipype_heatmap.cli``: the ``nipype-heatmap`` program."""

from .heatmap import run

run()
