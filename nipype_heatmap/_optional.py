"""Optional dependencies, through one mechanism: nibabel's ``optional_package``.

Heavy ones (pybids, matplotlib, nilearn, SciPy) are imported only when a function needs
them, through :func:`require`, so that ``import nipype_heatmap`` stays light.
"""

from __future__ import annotations

from types import ModuleType

from nibabel.optpkg import optional_package

#: Which extra of ``nipype_heatmap`` brings each optional module.
EXTRAS = {
    "bids": "bids",
    "matplotlib": "report",
    "nilearn": "report",
    "scipy": "demo",
    "skimage": "demo",
}


def require(name: str, purpose: str, extra: str | None = None) -> ModuleType:
    """Import an optional module or raise an ImportError that says which extra to install.

    Parameters
    ----------
    name : str
        The module to import (``"bids"``, ``"nilearn.plotting"``...).
    purpose : str
        What needs it, for the message (``"the BIDS layer"``).
    extra : str, optional
        The extra to name in the message; default: the one listed in :data:`EXTRAS`.

    Raises
    ------
    ImportError
        If the module cannot be imported.
    """
    module, have, _ = optional_package(name)
    if not have:
        extra = extra or EXTRAS.get(name.split(".")[0], "all")
        raise ImportError(
            f"{purpose} needs the Python package {name.split('.')[0]!r}: "
            f"pip install 'nipype_heatmap[{extra}]'"
        )
    return module  # type: ignore[return-value]  # a module once have is true
