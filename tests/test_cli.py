"""The nipype-heatmap command, called in-process through main()."""

from __future__ import annotations

import sys

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_allclose

from nipype_heatmap.cli.heatmap import main

from .conftest import SHAPE, fill_the_disk_at, reference_heatmap, stop_after_the_first_rename


def test_folder_to_mean_map(make_nifti, in_dir, tmp_path, capsys):
    files = [make_nifti(f"m{i}.nii.gz") for i in range(3)]
    out = tmp_path / "prob.nii.gz"
    assert main([str(in_dir), "-o", str(out), "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert_allclose(nb.load(out).get_fdata(), reference_heatmap(files), rtol=1e-6)


def test_flags_map_to_the_function_options(make_nifti, in_dir, tmp_path):
    files = [make_nifti(f"m{i}.nii.gz") for i in range(3)]
    out = tmp_path / "count.nii"
    assert main([str(in_dir), "-o", str(out), "--sum", "--no-clip", "--normalize", "-q"]) == 0
    assert_allclose(
        nb.load(out).get_fdata(), reference_heatmap(files, False, False, True), rtol=1e-6
    )


def test_files_and_folders_mixed_in_given_order(make_nifti, in_dir, tmp_path):
    first = make_nifti("z_first.nii.gz", folder=tmp_path / "extra")
    files = [make_nifti(f"m{i}.nii.gz") for i in range(2)]
    out = tmp_path / "o.nii.gz"
    assert main([str(first), str(in_dir), "-o", str(out), "-q"]) == 0
    img = nb.load(out)
    assert b"of 3 volumes" in img.header["descrip"].tobytes()
    assert_allclose(img.get_fdata(), reference_heatmap([first, *files]), rtol=1e-6)


def test_bad_data_gives_one_line_naming_the_file_and_exit_1(make_nifti, in_dir, tmp_path, capsys):
    make_nifti("a.nii.gz")
    bad = make_nifti("b.nii.gz", np.zeros((5, 5, 5), np.uint8))
    out = tmp_path / "o.nii.gz"
    assert main([str(in_dir), "-o", str(out), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(bad) in err and "Traceback" not in err
    assert not out.exists()


def test_debug_shows_the_traceback(make_nifti, in_dir, tmp_path):
    make_nifti("a.nii.gz")
    make_nifti("b.nii.gz", np.zeros((5, 5, 5), np.uint8))
    with pytest.raises(ValueError, match="b.nii.gz"):
        main([str(in_dir), "-o", str(tmp_path / "o.nii.gz"), "--debug", "-q"])


def test_missing_input_exits_1(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "-o", str(tmp_path / "o.nii.gz")]) == 1
    assert "nope: no such file or folder" in capsys.readouterr().err


def test_unwritable_output_exits_1(make_nifti, in_dir, tmp_path, capsys):
    make_nifti("a.nii.gz")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([str(in_dir), "-o", str(blocker / "o.nii.gz"), "-q"]) == 1
    assert str(blocker) in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["x.nii.gz"],
        ["in/", "-o", "out.txt"],
        ["--demo", "d", "in/"],
        ["--bogus"],
        ["--update", "s.nii.gz", "--demo", "d"],
        ["--update", "s.nii.gz", "a.nii", "--group-b", "b.nii"],
        ["--update", "s.nii.gz"],
        ["--update", "s.nii.gz", "-o", "maps.txt"],
        ["--remove", "a.nii", "-o", "o.nii"],
        ["-o", "o.nii"],
    ],
    ids=[
        "nothing",
        "no-output",
        "bad-suffix",
        "demo-with-input",
        "unknown-flag",
        "update-with-demo",
        "update-with-group-b",
        "update-with-nothing-to-do",
        "update-bad-suffix",
        "remove-without-update",
        "output-without-input",
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    expected = {  # the message says which rule was broken
        "--demo": "--update does not go with --demo or --group-b",
        "--group-b": "--update does not go with --demo or --group-b",
        "maps.txt": "must end in .nii or .nii.gz",
        "--remove": "--remove needs --update STATE_FILE",
    }
    if "--update" in argv and len(argv) == 2:
        assert "--update needs INPUTs to add" in err
    if argv == ["-o", "o.nii"]:
        assert "give at least one INPUT folder or file" in err
    for flag, message in expected.items():
        if flag in argv and ("--update" in argv or flag == "--remove"):
            assert message in err


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "nipype-heatmap masks/ -o" in text


def test_output_written_into_input_folder_is_not_read_back(make_nifti, in_dir):
    make_nifti("a.nii.gz", np.ones(SHAPE, np.uint8))
    out = in_dir / "count.nii.gz"
    for _ in range(2):
        assert main([str(in_dir), "-o", str(out), "--sum", "--no-clip", "-q"]) == 0
        assert nb.load(out).get_fdata().max() == 1


def test_output_named_like_an_input_exits_1_and_keeps_the_input(make_nifti, in_dir, capsys):
    make_nifti("sub-01_mask.nii.gz")
    make_nifti("sub-02_mask.nii.gz")
    target = in_dir / "sub-01_mask.nii.gz"
    before = target.read_bytes()
    assert main([str(in_dir), "-o", str(target), "-q"]) == 1
    assert f"{target}: the heatmap would overwrite the input there" in capsys.readouterr().err
    assert target.read_bytes() == before


@pytest.mark.parametrize(
    ("error", "status", "says"),
    [
        (RuntimeError("boom"), 1, "error: unexpected RuntimeError: boom"),
        (MemoryError("too big"), 1, "error: unexpected MemoryError: too big"),
        (KeyboardInterrupt(), 130, "interrupted; no output written"),
    ],
    ids=["unexpected", "memory", "ctrl_c"],
)
def test_no_traceback_for_any_failure(
    make_nifti, in_dir, tmp_path, capsys, monkeypatch, error, status, says
):
    from nipype_heatmap import api

    make_nifti("a.nii.gz")

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(api, "write_cohort_maps", failing)
    assert main([str(in_dir), "-o", str(tmp_path / "o.nii.gz"), "-q"]) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith(f"nipype-heatmap: {says}")


def test_ctrl_c_while_the_maps_are_put_in_place_says_to_run_again(
    make_nifti, in_dir, tmp_path, capsys, monkeypatch
):
    # Some maps are replaced already: the one line must not say "no output written"; the
    # same command then completes the set.
    for i in range(3):
        make_nifti(f"m{i}.nii.gz")
    out = tmp_path / "out" / "map.nii.gz"
    argv = [str(in_dir), "-o", str(out), "--coverage", "--std", "-q"]
    with monkeypatch.context() as patch:
        stop_after_the_first_rename(patch)
        assert main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no output written" not in err
    assert err.startswith(f"nipype-heatmap: {out.parent}: interrupted while replacing")
    assert err.endswith("run the command again")
    assert main(argv) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "map.nii.gz",
        "map_coverage.nii.gz",
        "map_std.nii.gz",
        "map_variance.nii.gz",
    ]


def test_quiet_hides_the_progress_bar(make_nifti, in_dir, tmp_path, capsys, monkeypatch):
    make_nifti("a.nii.gz")
    make_nifti("b.nii.gz")
    seen = {}
    from nipype_heatmap import api

    real = api.write_cohort_maps

    def spy(*args, **kwargs):
        seen["progress"] = kwargs.get("progress")
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "write_cohort_maps", spy)
    assert main([str(in_dir), "-o", str(tmp_path / "q.nii.gz"), "-q"]) == 0
    assert seen["progress"] is False
    assert main([str(in_dir), "-o", str(tmp_path / "v.nii.gz")]) == 0
    assert seen["progress"] is None  # shown when stderr is a terminal


def test_version_is_printed(capsys):
    from nipype_heatmap import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_warnings_are_one_line_each_with_their_level(make_nifti, in_dir, tmp_path, capsys):
    a = make_nifti("a.nii.gz")
    assert main([str(a), str(a), "-o", str(tmp_path / "o.nii.gz"), "-q"]) == 0
    err = capsys.readouterr().err
    assert f"WARNING: {a} is listed more than once" in err


def test_the_demo_quiets_nipype_node_logs_and_restores_them():
    # The demo runs Nipype workflows, which log every node at INFO: the command sets
    # Nipype's workflow and interface levels to WARNING for the run, unless --debug, and
    # puts them back afterwards (in-process callers keep their configuration).
    import argparse
    import logging

    from nipype import config

    from nipype_heatmap.cli._base import _setup_logging

    before = config.get("logging", "workflow_level")
    package = logging.getLogger("nipype_heatmap")
    handlers = package.handlers[:]
    restore = _setup_logging(argparse.Namespace(demo=True, debug=False, quiet=False))
    try:
        assert config.get("logging", "workflow_level") == "WARNING"
        assert config.get("logging", "interface_level") == "WARNING"
        assert logging.getLogger("nipype.workflow").level == logging.WARNING  # in force
    finally:
        restore()
    assert config.get("logging", "workflow_level") == before
    assert logging.getLogger("nipype.workflow").level == logging.getLevelName(before)
    assert package.handlers == handlers  # this package's logger is put back too
    restore = _setup_logging(argparse.Namespace(demo=True, debug=True, quiet=False))
    try:
        assert config.get("logging", "workflow_level") == before  # --debug: left as is
    finally:
        restore()


def test_the_package_log_is_not_passed_on_to_the_root_logger(make_nifti, tmp_path):
    # An embedding program's root handlers would print every line a second time.
    import logging

    seen = []

    class Recorder(logging.Handler):
        def emit(self, record):
            seen.append(record)

    recorder = Recorder()
    logging.getLogger().addHandler(recorder)
    try:
        a = make_nifti("a.nii.gz")
        assert main([str(a), str(a), "-o", str(tmp_path / "o.nii.gz"), "-q"]) == 0
    finally:
        logging.getLogger().removeHandler(recorder)
    assert not [r for r in seen if r.name.startswith("nipype_heatmap")]


def test_python_m_runs_the_command_with_its_exit_status(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nipype_heatmap.cli",
            str(tmp_path / "missing"),
            "-o",
            str(tmp_path / "o.nii"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "missing" in done.stderr


def test_update_with_an_output_that_is_a_folder_fails_before_touching_the_state(
    make_nifti, in_dir, tmp_path, capsys
):
    # The maps' output is checked before the state or any input is read: the state is not
    # updated by a run whose maps could not be written (mutant: the check removed).
    make_nifti("a.nii.gz")
    state = tmp_path / "state.nii.gz"
    assert (
        main([str(in_dir), "-o", str(tmp_path / "m.nii.gz"), "--save-state", str(state), "-q"])
        == 0
    )
    before = state.read_bytes()
    new = make_nifti("b.nii.gz", folder=tmp_path / "new")
    folder = tmp_path / "a_folder.nii.gz"
    folder.mkdir()
    assert main(["--update", str(state), str(new), "-o", str(folder), "-q"]) == 1
    assert "folder" in capsys.readouterr().err
    assert state.read_bytes() == before


def test_main_leaves_the_package_logger_as_it_found_it(make_nifti, in_dir, tmp_path):
    import logging

    logger = logging.getLogger("nipype_heatmap")
    before = (logger.handlers[:], logger.propagate, logger.level)
    make_nifti("a.nii.gz")
    assert main([str(in_dir), "-o", str(tmp_path / "o.nii.gz"), "-q"]) == 0
    assert (logger.handlers[:], logger.propagate, logger.level) == before


def test_std_defaults_to_the_sample_standard_deviation(make_nifti, in_dir, tmp_path, rng):
    # --std without --ddof: ddof 1, numpy.std(..., ddof=1) of the inputs (mutant: default 2).
    data = [rng.random(SHAPE).astype(np.float32) for _ in range(4)]
    for i, d in enumerate(data):
        make_nifti(f"p{i}.nii", d, dtype=np.float32)
    out = tmp_path / "m.nii.gz"
    assert main([str(in_dir), "-o", str(out), "--std", "-q"]) == 0
    std_file = next(tmp_path.glob("m_std*.nii.gz"))
    expected = np.std(np.stack([d.astype(np.float64) for d in data]), axis=0, ddof=1)
    assert_allclose(nb.load(std_file).get_fdata(), expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("command", "function"),
    [
        ("nipype-heatmap", "nipype_heatmap.cli.heatmap:run"),
        ("nipype-heatmap-atlas", "nipype_heatmap.cli.atlas:run"),
    ],
)
def test_installed_commands_exit_with_main_s_status(command, function, tmp_path):
    import subprocess
    from importlib.metadata import entry_points

    (point,) = entry_points(group="console_scripts", name=command)
    assert point.value == function
    script = f"import sys\nsys.argv[0] = {command!r}\nfrom {point.module} import run\nrun()\n"
    missing, out = str(tmp_path / "missing"), str(tmp_path / "out.nii.gz")
    done = subprocess.run(
        [sys.executable, "-c", script, missing, "-o", out], capture_output=True, text=True
    )
    assert done.returncode == 1 and "missing" in done.stderr


def test_subtraction_groups_may_be_folders_and_a_rerun_skips_its_own_maps(make_nifti, tmp_path):
    # Both groups are INPUTs: folders (their NIfTI files) or files, as the README shows
    # (mutant: the folders passed on as if they were files). Written into group A's
    # folder, a re-run leaves the earlier subtraction maps out of group A.
    group_a = [make_nifti(f"a{i}.nii.gz") for i in range(3)]
    group_b = [make_nifti(f"b{i}.nii.gz", folder=tmp_path / "b") for i in range(2)]
    extra_b = make_nifti("b9.nii.gz", folder=tmp_path / "more")
    out = group_a[0].parent / "diff.nii.gz"
    argv = [str(group_a[0].parent), "-o", str(out), "--group-b", str(tmp_path / "b")]

    def percent(files):
        return np.mean([nb.load(f).get_fdata() for f in files], axis=0) * 100

    for _ in range(2):
        assert main([*argv, str(extra_b), "-q"]) == 0
        want_a, want_b = percent(group_a), percent([*group_b, extra_b])
        assert_allclose(nb.load(out).get_fdata(), want_a - want_b, atol=1e-4)
        percent_a = nb.load(out.with_name("diff_percentA.nii.gz")).get_fdata()
        assert_allclose(percent_a, want_a, atol=1e-4)


# -- output collisions, re-runs and failures: nothing half written ------------------------
def _files_under(root):
    """Every file under ``root`` (hidden ones too: temporary files, journals) -> its bytes.
    A state's ``.lock`` file is left out: an update creates it and leaves it, by design
    (removing a lock file would race with another update waiting on it)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


@pytest.fixture
def cohort_dirs(make_nifti, tmp_path):
    """masks/ (sub-01..03), new/ (sub-04, sub-05) and state.nii.gz, the state of masks/."""
    for i in (1, 2, 3):
        make_nifti(f"sub-0{i}_mask.nii.gz")
    for i in (4, 5):
        make_nifti(f"sub-0{i}_mask.nii.gz", folder=tmp_path / "new")
    masks, new, state = tmp_path / "inputs", tmp_path / "new", tmp_path / "state.nii.gz"
    argv = [str(masks), "-o", str(tmp_path / "first.nii.gz"), "--save-state", str(state), "-q"]
    assert main(argv) == 0
    return masks, new, state


@pytest.fixture
def volume_reads(monkeypatch):
    """The input volumes a run reads (through the API's read paths), in order."""
    from nipype_heatmap import api

    reads = []
    modules = (api.inputs, api.outputs, api.heatmaps, api.states)
    for name in ("accumulate_files", "add_files", "read_volume"):
        for module in (m for m in modules if hasattr(m, name)):
            real = getattr(module, name)

            def spy(*args, _real=real, _name=name, **kwargs):
                reads.append(_name)
                return _real(*args, **kwargs)

            monkeypatch.setattr(module, name, spy)
    return reads


# name: (argv with {masks} {new} {state} {out}, the file named, the message after it)
COLLISIONS = {
    "state-is-an-input": (
        "{masks} -o {out}/m.nii.gz --save-state {masks}/sub-01_mask.nii.gz",
        "{masks}/sub-01_mask.nii.gz",
        "the state would overwrite the input there",
    ),
    "update-state-is-an-input-to-add": (
        "--update {state} {new} -o {out}/m.nii.gz --save-state {new}/sub-04_mask.nii.gz",
        "{new}/sub-04_mask.nii.gz",
        "the state would overwrite the input there",
    ),
    "update-state-is-the-input-to-remove": (
        "--update {state} --remove {masks}/sub-01_mask.nii.gz "
        "--save-state {masks}/sub-01_mask.nii.gz",
        "{masks}/sub-01_mask.nii.gz",
        "the state would overwrite the input to remove there",
    ),
    "update-maps-over-the-state": (
        "--update {state} {new} -o {state}",
        "{state}",
        "both the state and the heatmap would be written to this file",
    ),
    "state-over-the-map": (
        "{masks} -o {out}/x.nii.gz --save-state {out}/x.nii.gz",
        "{out}/x.nii.gz",
        "both the state and the heatmap would be written to this file",
    ),
    "state-over-the-coverage": (
        "{masks} -o {out}/y.nii.gz --coverage --save-state {out}/y_coverage.nii.gz",
        "{out}/y_coverage.nii.gz",
        "both the state and the coverage would be written to this file",
    ),
    "subtraction-over-a-group-a-input": (
        "{masks} -o {masks}/sub-02_mask.nii.gz --group-b {new}",
        "{masks}/sub-02_mask.nii.gz",
        "the subtraction would overwrite the group A input there",
    ),
    "subtraction-over-a-group-b-input": (
        "{masks} -o {new}/sub-05_mask.nii.gz --group-b {new}",
        "{new}/sub-05_mask.nii.gz",
        "the subtraction would overwrite the group B input there",
    ),
    "percent-a-over-a-group-b-input": (
        "{masks} -o {out}/sub.nii.gz --group-b {new}/sub-04_mask.nii.gz {out}/sub_percentA.nii.gz",
        "{out}/sub_percentA.nii.gz",
        "the percent_a would overwrite the group B input there",
    ),
    "percent-b-over-a-group-a-input": (
        "{masks}/sub-01_mask.nii.gz {out}/sub_percentB.nii.gz -o {out}/sub.nii.gz --group-b {new}",
        "{out}/sub_percentB.nii.gz",
        "the percent_b would overwrite the group A input there",
    ),
}


@pytest.mark.parametrize("case", COLLISIONS)
def test_colliding_outputs_are_refused_before_any_input_is_read(
    case, cohort_dirs, tmp_path, make_nifti, volume_reads, capsys
):
    # Exit 1 with one line naming the file and both roles; no input volume read (the
    # plan is checked first); nothing written anywhere; every input and the state as
    # they were.
    masks, new, state = cohort_dirs
    out = tmp_path / "out"
    for name in ("sub_percentA.nii.gz", "sub_percentB.nii.gz"):  # plain masks, inputs here
        make_nifti(name, folder=out)
    argv_text, named, message = COLLISIONS[case]
    paths = {"masks": masks, "new": new, "state": state, "out": out}
    before = _files_under(tmp_path)
    capsys.readouterr()
    assert main([*argv_text.format(**paths).split(), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{named.format(**paths)}: {message}" in err
    assert volume_reads == []
    assert _files_under(tmp_path) == before


@pytest.mark.parametrize("flag", ["--save-state", "-o"])
def test_an_update_never_overwrites_an_input_the_state_keeps(cohort_dirs, tmp_path, flag):
    masks, new, state = cohort_dirs
    kept = masks / "sub-02_mask.nii.gz"
    before = _files_under(tmp_path)
    assert main(["--update", str(state), str(new), flag, str(kept), "-q"]) == 1
    assert _files_under(tmp_path) == before


def test_a_state_saved_into_an_input_folder_is_not_read_back(make_nifti, in_dir, tmp_path):
    # The same command run twice: the second run's listing of the folder leaves out the
    # state it is about to replace (this tool's file at one of its outputs' names).
    from nipype_heatmap.state import load_state

    files = [str(make_nifti(f"sub-0{i}_mask.nii.gz")) for i in range(3)]
    state = in_dir / "cohort_state.nii.gz"
    out = tmp_path / "m.nii.gz"
    argv = [str(in_dir), "-o", str(out), "--save-state", str(state), "--coverage", "-q"]
    for _ in range(2):
        assert main(argv) == 0
        assert load_state(state).sources == files
        assert b"of 3 volumes" in nb.load(out).header["descrip"].tobytes()
        assert nb.load(tmp_path / "m_coverage.nii.gz").get_fdata().max() == 3


@pytest.fixture
def cohort_maps(make_nifti, in_dir, tmp_path):
    """A cohort run's seven maps and its state in out/, then a fourth input added."""
    for i in range(3):
        make_nifti(f"sub-0{i}_mask.nii.gz")
    out = tmp_path / "out"
    argv = [str(in_dir), "-o", str(out / "m.nii.gz"), "--coverage", "--std", "--min-count", "1"]
    argv += ["--save-state", str(out / "state.nii.gz"), "-q"]
    assert main(argv) == 0
    before = _files_under(out)
    assert len(before) == 8  # m, coverage, std, variance, overlap, mincount1, table, state
    make_nifti("sub-03_mask.nii.gz")
    return argv, out, before


def test_a_rerun_whose_third_map_cannot_be_written_keeps_every_earlier_map(
    cohort_maps, monkeypatch, capsys
):
    # The disk fills while the std map (the third file) is written: exit 1 naming it, and
    # every earlier file (heatmap, coverage, std, variance, ..., state) byte for byte as
    # it was: never a new heatmap beside an old std map; no temporary file left.
    argv, out, before = cohort_maps
    calls = fill_the_disk_at(monkeypatch, 3)
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert calls[2] == str(out / "m_std.nii.gz")
    assert f"{calls[2]}: cannot write the output (No space left on device)" in err
    assert _files_under(out) == before


def test_a_folder_in_the_way_of_the_third_map_is_refused_before_reading(
    cohort_maps, volume_reads, capsys
):
    argv, out, before = cohort_maps
    std = out / "m_std.nii.gz"
    std.unlink()
    std.mkdir()
    del before["m_std.nii.gz"]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{std}: output path is an existing folder" in err and err.count("\n") == 1
    assert volume_reads == []
    assert _files_under(out) == before


def as_if_not_installed(monkeypatch, module: str) -> None:
    """Make ``module`` and every submodule of it unimportable for the test, even when an
    earlier test imported them (a submodule in ``sys.modules`` is found without its
    package)."""
    for name in [module, *(n for n in sys.modules if n.startswith(module + "."))]:
        monkeypatch.setitem(sys.modules, name, None)


def test_the_demo_without_its_extra_says_what_to_install(tmp_path, capsys, monkeypatch):
    as_if_not_installed(monkeypatch, "nilearn")  # SciPy and scikit-image come with it
    assert main(["--demo", str(tmp_path / "demo"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected" not in err
    assert "the demo needs the Python package 'nilearn': pip install 'nipype_heatmap[demo]'" in err


@pytest.mark.parametrize("command", ["heatmap", "atlas", "bids"])
@pytest.mark.parametrize("outcome", ["ok", "error"])
def test_every_command_leaves_the_package_logger_as_it_found_it(
    command, outcome, make_nifti, in_dir, tmp_path, capsys
):
    # In-process callers (tests, notebooks) keep their logging: handlers, propagation and
    # level of the package logger, after a success and after an error.
    import importlib
    import logging

    main_of = importlib.import_module(f"nipype_heatmap.cli.{command}").main
    make_nifti("a.nii.gz", np.ones(SHAPE, np.uint8))
    dataset = tmp_path / "lesions"  # a BIDS derivatives dataset of one mask, in a template
    mask = "sub-01_space-MNI152NLin2009cAsym_label-lesion_mask.nii.gz"  # space (issue 27)
    make_nifti(mask, folder=dataset / "sub-01" / "anat")
    (dataset / "dataset_description.json").write_text(
        '{"Name": "l", "BIDSVersion": "1.10.0", "DatasetType": "derivative"}'
    )
    argv = {
        "heatmap": [str(in_dir), "-o", str(tmp_path / "o.nii.gz")],
        "atlas": [str(in_dir), "-o", str(tmp_path / "atlas")],
        # -v sets the package logger's level too (after -q): undone as well
        "bids": [str(dataset), str(tmp_path / "deriv"), "group", "--label", "lesion", "-v"],
    }[command]
    if outcome == "error":
        argv[0] = str(tmp_path / "missing")
    logger = logging.getLogger("nipype_heatmap")
    mine = logging.NullHandler()
    logger.addHandler(mine)
    logger.setLevel(logging.ERROR)
    before = (logger.handlers[:], logger.propagate, logger.level)
    try:
        assert main_of([*argv, "-q"]) == (0 if outcome == "ok" else 1)
    finally:
        after = (logger.handlers[:], logger.propagate, logger.level)
        logger.removeHandler(mine)
        logger.setLevel(logging.NOTSET)
    assert after == before
    capsys.readouterr()
