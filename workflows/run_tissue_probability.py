"""Tissue probability maps (CSF, GM, WM) from T1-weighted images on one grid.

python workflows/run_tissue_probability.py t1w/ brain_mask.nii.gz work/ --segmenter otsu
"""

import argparse

from nipype_heatmap.io import find_nifti_files
from nipype_heatmap.workflows import SEGMENTERS, init_tissue_probability_wf

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("t1w_dir", help="folder of T1w images, registered to one template grid")
parser.add_argument("brain_mask", help="brain mask on the same grid")
parser.add_argument("work_dir", help="Nipype working folder (the maps end up inside)")
parser.add_argument("--segmenter", choices=SEGMENTERS, default="otsu")
parser.add_argument("--plugin", default="MultiProc", help="Nipype plugin")
args = parser.parse_args()

wf = init_tissue_probability_wf(segmenter=args.segmenter)
wf.base_dir = args.work_dir
wf.inputs.inputnode.t1w_files = find_nifti_files(args.t1w_dir)
wf.inputs.inputnode.brain_mask = args.brain_mask
for node in wf.run(plugin=args.plugin).nodes():
    if node.name.endswith("_heatmap"):
        print(node.name, node.result.outputs.out_file)
