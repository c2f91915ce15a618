"""The command-line programs, one module each over a shared base:

- ``nipype-heatmap``: :mod:`~nipype_heatmap.cli.heatmap`;
- ``nipype-heatmap-bids``: :mod:`~nipype_heatmap.cli.bids`;
- ``nipype-heatmap-atlas``: :mod:`~nipype_heatmap.cli.atlas`.

Each parses its arguments, sets up logging, calls the library and maps exceptions to exit
statuses (:mod:`~nipype_heatmap.cli._base`).
"""

__all__: list[str] = []  # the programs are the modules; nothing to import from here
