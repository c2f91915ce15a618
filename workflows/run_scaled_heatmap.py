"""A heatmap of very many files as a map-reduce: one job per chunk, then an exact merge.

    python workflows/run_scaled_heatmap.py masks/ /scratch/work --chunk-size 500 \\
        --plugin SLURM --sbatch-args "-p short --mem=1G -t 30"
"""

import argparse

from nipype_heatmap.io import find_nifti_files
from nipype_heatmap.workflows import init_scaled_heatmap_wf

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("in_dir", help="folder of 3D NIfTI files on one grid")
parser.add_argument("work_dir", help="working folder on a file system every job sees")
parser.add_argument("--chunk-size", type=int, default=500, help="files per job")
parser.add_argument("--sum", dest="use_mean", action="store_false", help="count, not mean")
parser.add_argument("--plugin", default="MultiProc", help="Nipype plugin (SLURM, SGE...)")
parser.add_argument("--sbatch-args", default="", help="plugin_args['sbatch_args'] for SLURM")
args = parser.parse_args()

wf = init_scaled_heatmap_wf(chunk_size=args.chunk_size, use_mean=args.use_mean)
wf.base_dir = args.work_dir
wf.inputs.inputnode.in_files = find_nifti_files(args.in_dir)
plugin_args = {"sbatch_args": args.sbatch_args} if args.plugin == "SLURM" else {}
for node in wf.run(plugin=args.plugin, plugin_args=plugin_args).nodes():
    if node.name == "merge_heatmaps":
        print(node.result.outputs.out_file)
