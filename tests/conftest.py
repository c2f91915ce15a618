"""Shared fixtures: a seeded generator and a factory of tiny synthetic NIfTI volumes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from benchmarks.reference_loop import reference_heatmap  # noqa: F401 - the one reference

# Unequal dimensions: equal sizes hide axis mix-ups.
SHAPE = (7, 8, 9)


def default_affine() -> np.ndarray:
    """A 2 mm grid with a non-trivial origin, as a template space would have."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-6.0, -8.0, -9.0]
    return affine


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node SLURM cluster for this session, or a skip that says why not."""
    from .slurm_cluster import ClusterUnavailable, start_cluster

    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except ClusterUnavailable as err:
        pytest.skip(f"no SLURM cluster: {err}")
    yield cluster
    cluster.stop()


# -- the BIDS trees of tests/bids_trees.py, made once a session -----------------------------
@pytest.fixture(scope="session")
def fmriprep(tmp_path_factory) -> Path:
    """An fMRIPrep-like derivatives dataset (see ``bids_trees.py``)."""
    from . import bids_trees

    return bids_trees.shared(tmp_path_factory, "fmriprep")


@pytest.fixture(scope="session")
def lesions(tmp_path_factory) -> Path:
    """A lesion-mask derivatives dataset (see ``bids_trees.py``)."""
    from . import bids_trees

    return bids_trees.shared(tmp_path_factory, "lesions")


@pytest.fixture(scope="session")
def fp_index(fmriprep):
    """The fMRIPrep dataset's index, made once (selections take it instead of a path)."""
    from nipype_heatmap.bids import BIDSIndex

    return BIDSIndex(fmriprep)


@pytest.fixture(scope="session")
def lesion_index(lesions):
    from nipype_heatmap.bids import BIDSIndex

    return BIDSIndex(lesions)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261121)


@pytest.fixture
def in_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    return folder


@pytest.fixture
def make_nifti(in_dir: Path, rng: np.random.Generator):
    """Return a factory that writes one small NIfTI file and returns its path.

    ``make_nifti("a.nii.gz")`` writes a random binary uint8 mask of shape ``SHAPE`` into the
    ``inputs`` folder. Keywords set the data, dtype, affine, scaling, NIfTI-2 and folder.
    """

    def _make(
        name: str,
        data: np.ndarray | None = None,
        *,
        dtype=np.uint8,
        affine: np.ndarray | None = None,
        slope: float | None = None,
        inter: float | None = None,
        nifti2: bool = False,
        folder: Path | None = None,
        header_hook=None,
    ) -> Path:
        if data is None:
            data = (rng.random(SHAPE) > 0.6).astype(dtype)
        klass = nb.Nifti2Image if nifti2 else nb.Nifti1Image
        data = np.asarray(data)
        img = klass(data, default_affine() if affine is None else affine, dtype=data.dtype)
        img.header.set_data_dtype(np.asarray(data).dtype)
        if slope is not None:
            img.header.set_slope_inter(slope, inter if inter is not None else 0.0)
        if header_hook is not None:
            header_hook(img.header)
        path = (folder or in_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        img.to_filename(path)
        return path

    return _make


@contextlib.contextmanager
def no_worker_thread_left():
    """Fail if a thread of this package (``heatmap-*``) started inside the block is still
    alive at its end: a long-lived process (a Nipype worker, a notebook) running many maps
    must not keep the idle threads of every run."""
    before = {t.ident for t in threading.enumerate()}
    yield
    left = [
        t.name
        for t in threading.enumerate()
        if t.ident not in before and t.name.startswith("heatmap")
    ]
    assert left == [], f"worker threads left running: {left}"


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def _nipype_crashfiles_in_tmp(tmp_path_factory, monkeypatch):
    """Point Nipype's crash files at a temporary folder, never the working directory."""
    from nipype import config

    crash_dir = tmp_path_factory.mktemp("crash")
    old = config.get("execution", "crashdump_dir", None)
    config.set("execution", "crashdump_dir", str(crash_dir))
    yield
    if old is None:
        config._sections["execution"].pop("crashdump_dir", None)  # noqa: SLF001
    else:
        config.set("execution", "crashdump_dir", old)


UNPRIVILEGED_UID = 65534  # "nobody" on Debian


def fill_the_disk_at(monkeypatch, nth: int) -> list[str]:
    """Make the ``nth`` output file a run writes fail as on a full disk (ENOSPC after its
    first 100 bytes); return the list of the files it starts writing, in order."""
    import errno

    from nipype_heatmap.io import writing

    real_write = writing.Temporary.write
    calls: list[str] = []

    def write(self, chunks):
        calls.append(self.out_file)
        if len(calls) == nth:

            def full_disk():
                yield b"\0" * 100
                raise OSError(errno.ENOSPC, "No space left on device")

            chunks = full_disk()
        return real_write(self, chunks)

    monkeypatch.setattr(writing.Temporary, "write", write)
    return calls


def open_descriptors() -> set[str]:
    """This process's open file descriptors (Linux: ``/proc/self/fd``)."""
    return set(os.listdir("/proc/self/fd"))


def current_umask() -> int:
    """The process's umask (read by setting it, then set back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def stop_after_the_first_rename(monkeypatch, exception=KeyboardInterrupt) -> list[str]:
    """Make the next commit raise ``exception`` after its first rename, as a Ctrl-C (or an
    exit) between its renames would; return the list that receives the renamed file."""
    from nipype_heatmap.io import writing

    real_rename = writing.Temporary.rename
    renamed: list[str] = []

    def rename(self):
        if renamed:
            raise exception
        real_rename(self)
        renamed.append(self.out_file)

    monkeypatch.setattr(writing.Temporary, "rename", rename)
    return renamed


def run_unprivileged(code: str) -> str:
    """Run Python code as an unprivileged user; return its standard output.

    Root ignores file permissions, and CI runs as root: permission checks are tested as
    "nobody" (through ``setpriv``). The code gets ``WORK``, a fresh folder it may write in.
    As a non-root user, it runs as that user. Skips, saying why, where neither is possible.
    """
    import shutil
    import subprocess
    import sys
    import tempfile
    import textwrap

    work = tempfile.mkdtemp(prefix="nipype_heatmap_unpriv_")
    try:
        os.chmod(work, 0o777)
        prefix: list[str] = []
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv (util-linux): cannot drop to nobody")
            prefix = [
                setpriv,
                f"--reuid={UNPRIVILEGED_UID}",
                f"--regid={UNPRIVILEGED_UID}",
                "--clear-groups",
            ]
        script = f"WORK = {work!r}\n" + textwrap.dedent(code)
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": root, "HOME": work}
        probe = subprocess.run(
            [*prefix, sys.executable, "-c", "import nipype_heatmap"],
            capture_output=True,
            text=True,
            env=env,
            cwd=work,
        )
        if probe.returncode != 0:
            pytest.skip(f"the unprivileged user cannot run this Python: {probe.stderr[-300:]}")
        done = subprocess.run(
            [*prefix, sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env=env,
            cwd=work,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
