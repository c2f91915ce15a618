"""Spaces: which ``space`` entities hold a group map, and the reference each one names.

A group map adds voxels of different subjects, so each voxel must be the same place in
every subject: the inputs must be in a **template space** (a TemplateFlow identifier such
as ``MNI152NLin2009cAsym``, or another BIDS standard template). Subject-native spaces
(``T1w``, ``T2w``, ``boldref``, ``fsnative``...) and files without a ``space`` entity are in
each subject's own anatomy: their grids may happen to match, but their voxels do not. Such
inputs are refused unless ``allow_native_space`` (the rare subject-level use: one subject's
sessions, in that subject's space).

The ``SpatialReference`` of a map in a template space is the TemplateFlow URL of the
template's T1w image at the map's resolution, in the form fMRIPrep writes (through
niworkflows): ``https://templateflow.s3.amazonaws.com/tpl-<T>/tpl-<T>_res-<RR>_T1w.nii.gz``,
where ``RR`` is the ``res`` entity (fMRIPrep's ``res`` is TemplateFlow's resolution index),
two digits; ``01`` when the inputs have no ``res`` (the template's own frame).
"""

from __future__ import annotations

__all__ = [
    "NATIVE_SPACES",
    "TEMPLATE_SPACES",
    "is_template",
    "native_space_problem",
    "spatial_reference",
]

#: TemplateFlow template identifiers of volumetric templates, and the other BIDS standard
#: template identifiers (BIDS appendix "Coordinate systems").
TEMPLATE_SPACES = frozenset(
    """MNI152Lin MNI152NLin2009aAsym MNI152NLin2009aSym MNI152NLin2009bAsym
    MNI152NLin2009bSym MNI152NLin2009cAsym MNI152NLin2009cSym MNI152NLin6Asym MNI152NLin6Sym
    MNI305 MNIColin27 MNIInfant MNIPediatricAsym NKI OASIS30ANTs PNC UNCInfant WHS
    Fischer344 MouseIn RESILIENT SUIT dhcpAsym dhcpSym dhcpVol ICBM452AirSpace
    ICBM452Warp5Space IXI549Space MNI152NLin6ASym OASIS30AntsOASISAnts OASIS30Atropos
    Talairach fsaverage fsaverage5 fsaverage6 fsaverageSym fsLR onavg""".split()
)

#: Spaces that are each subject's (or each run's) own, with what they are.
NATIVE_SPACES = {
    "T1w": "each subject's T1-weighted anatomy",
    "T2w": "each subject's T2-weighted anatomy",
    "anat": "each subject's anatomy",
    "boldref": "each run's BOLD reference",
    "func": "each run's functional space",
    "run": "each run's functional space",
    "sbref": "each run's single-band reference",
    "fsnative": "each subject's FreeSurfer surfaces",
    "scanner": "each scan's scanner coordinates",
    "orig": "each subject's original image",
    "individual": "each subject's own anatomy",
}

_HOW_TO = (
    "Use outputs in a template space (fMRIPrep: --output-spaces MNI152NLin2009cAsym; here: "
    "--space MNI152NLin2009cAsym), or pass --allow-native-space (allow_native_space=True) "
    "for a map within one subject's own space"
)


def is_template(space: str | None) -> bool:
    """Whether ``space`` is a standard template identifier."""
    return space in TEMPLATE_SPACES


def native_space_problem(space: str | None) -> str | None:
    """Why a group map cannot be made in ``space`` (None for a template space).

    Examples
    --------
    >>> native_space_problem("MNI152NLin2009cAsym") is None
    True
    >>> native_space_problem("T1w")[:47]
    "space-T1w is each subject's T1-weighted anatomy"
    """
    if is_template(space):
        return None
    if space is None:
        what = "files without a space entity are in each subject's own (native or scanner) space"
    elif space in NATIVE_SPACES:
        what = f"space-{space} is {NATIVE_SPACES[space]}"
    else:
        what = (
            f"space-{space} is not a TemplateFlow template identifier (e.g. "
            "MNI152NLin2009cAsym, MNI152NLin6Asym)"
        )
    return (
        f"{what}: a voxel there is not the same place in two subjects, even where their grids "
        f"happen to match, so a group map would add unrelated places. {_HOW_TO}"
    )


def spatial_reference(space: str | None, res: str | None) -> str | None:
    """The TemplateFlow URL of a template space at a resolution (None for other spaces).

    Examples
    --------
    >>> spatial_reference("MNI152NLin2009cAsym", "2")
    'https://templateflow.s3.amazonaws.com/tpl-MNI152NLin2009cAsym/tpl-MNI152NLin2009cAsym_res-02_T1w.nii.gz'
    >>> spatial_reference("MNI152NLin6Asym", None)
    'https://templateflow.s3.amazonaws.com/tpl-MNI152NLin6Asym/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz'
    >>> spatial_reference("T1w", "2") is None
    True
    """
    if not is_template(space):
        return None
    index = f"{int(res):02d}" if res is not None and str(res).isdigit() else (res or "01")
    return f"https://templateflow.s3.amazonaws.com/tpl-{space}/tpl-{space}_res-{index}_T1w.nii.gz"
