"""The built-in demo: a reproducible cohort on real anatomy, and maps a neuroimager trusts."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from nipype_heatmap.cli.heatmap import main
from nipype_heatmap.demo import gm_template_correlation, make_demo_cohort

pytest.importorskip("nilearn", reason="the demo needs the 'demo' extra (nilearn)")


def test_cohort_is_reproducible_and_varied(tmp_path):
    a = make_demo_cohort(tmp_path / "a", n_subjects=2, seed=3)
    b = make_demo_cohort(tmp_path / "b", n_subjects=2, seed=3)
    t1_a = [nb.load(f).get_fdata() for f in a.t1w_files]
    assert_array_equal(t1_a[0], nb.load(b.t1w_files[0]).get_fdata())
    assert not np.array_equal(t1_a[0], t1_a[1])  # subjects differ
    for mask in a.lesion_masks:
        data = nb.load(mask).get_fdata()
        assert set(np.unique(data)) <= {0.0, 1.0} and data.sum() > 0


@pytest.mark.slow
def test_demo_command_maps_real_anatomy(tmp_path, capsys):
    assert main(["--demo", str(tmp_path / "demo"), "-q"]) == 0
    text = capsys.readouterr().out
    maps = tmp_path / "demo" / "maps"
    cohort = tmp_path / "demo" / "cohort"
    r = gm_template_correlation(
        str(maps / "label-GM_probseg.nii.gz"),
        str(cohort / "tpl-MNI152_label-GM_probseg.nii.gz"),
        str(cohort / "tpl-MNI152_desc-brain_mask.nii.gz"),
    )
    assert r > 0.85, f"GM map correlates poorly with the MNI152 GM template (r={r:.3f})"
    assert f"r = {r:.3f}" in text

    masks = sorted((cohort / "anat").glob("*_label-lesion_mask.nii.gz"))
    assert len(masks) == 12
    direct = np.sum([nb.load(m).get_fdata() for m in masks], axis=0)
    count = nb.load(maps / "lesion_count.nii.gz").get_fdata()
    assert count.max() == direct.max() > 1
    assert f"max overlap {int(direct.max())} of 12" in text
    for tissue in ("CSF", "GM", "WM"):
        prob = nb.load(maps / f"label-{tissue}_probseg.nii.gz").get_fdata()
        assert 0.0 <= prob.min() and prob.max() == 1.0
