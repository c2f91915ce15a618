"""Lesion overlap count and probability maps of every mask in a folder.

python workflows/run_lesion_overlap.py derivatives/lesion_masks work/ --plugin MultiProc
"""

import argparse

from nipype_heatmap.io import find_nifti_files
from nipype_heatmap.workflows import init_lesion_overlap_wf

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("mask_dir", help="folder of binary lesion masks on one grid")
parser.add_argument("work_dir", help="Nipype working folder (the maps end up inside)")
parser.add_argument("--plugin", default="Linear", help="Nipype plugin (Linear, MultiProc...)")
args = parser.parse_args()

wf = init_lesion_overlap_wf()
wf.base_dir = args.work_dir
wf.inputs.inputnode.lesion_masks = find_nifti_files(args.mask_dir)
for node in wf.run(plugin=args.plugin).nodes():
    if node.name in ("overlap_count", "lesion_probability"):
        print(node.name, node.result.outputs.out_file)
