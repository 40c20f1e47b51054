"""Scratch folders: owned by a process, removed at exit, reclaimed after a kill, never taken from a live owner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from slimkit import scratch
from slimkit.passes.base import Context

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="owner checks read /proc")

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def tmpdir_private(tmp_path, monkeypatch):
    """A private temp directory for this process (and for subprocesses through TMPDIR)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    monkeypatch.setenv("TMPDIR", str(root))
    return root


def slimkit_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name.startswith("slimkit-"))


def fake_scratch(root: Path, name: str, owner: dict) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / scratch.OWNER_FILE).write_text(json.dumps(owner))
    (folder / "model.onnx").write_bytes(b"x" * 100)
    return folder


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def child_env(root: Path) -> dict:
    env = dict(os.environ, TMPDIR=str(root))
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_make_scratch_has_owner_file_and_is_removed_by_remove(tmpdir_private):
    folder = scratch.make_scratch()
    assert folder.parent == tmpdir_private and folder.name.startswith("slimkit-work-")
    owner = scratch.read_owner(folder)
    assert owner["pid"] == os.getpid() and owner["start"] == scratch.process_identity()["start"]
    assert scratch.owner_alive(owner)
    scratch.remove_scratch(folder)
    assert not folder.exists()


def test_dead_owner_is_reclaimed(tmpdir_private):
    dead = fake_scratch(tmpdir_private, "slimkit-work-dead", scratch.process_identity(dead_pid()) | {"start": 1})
    assert scratch.reclaim_dead_scratch() == [dead]
    assert not dead.exists()


def test_reused_pid_is_not_mistaken_for_the_owner(tmpdir_private):
    # Same pid as a live process (this one), but it started at another time: the owner is gone.
    me = scratch.process_identity()
    reused = fake_scratch(tmpdir_private, "slimkit-work-reused", me | {"start": me["start"] - 1})
    other_boot = fake_scratch(tmpdir_private, "slimkit-onnx-oldboot", me | {"boot": "another-boot"})
    assert sorted(scratch.reclaim_dead_scratch()) == sorted([reused, other_boot])


def test_live_owner_and_unowned_folders_are_kept(tmpdir_private):
    live = fake_scratch(tmpdir_private, "slimkit-work-live", scratch.process_identity())
    unowned = tmpdir_private / "slimkit-work-noowner"
    unowned.mkdir()
    garbled = tmpdir_private / "slimkit-work-garbled"
    garbled.mkdir()
    (garbled / scratch.OWNER_FILE).write_text("{not json")
    other = fake_scratch(tmpdir_private, "other-work-dead", {"pid": dead_pid(), "start": 1})
    assert scratch.reclaim_dead_scratch() == []
    made = scratch.make_scratch()
    assert live.exists() and unowned.exists() and garbled.exists() and other.exists()
    scratch.remove_scratch(made)


def test_killed_process_scratch_is_reclaimed_by_next_make_scratch(tmpdir_private):
    code = textwrap.dedent("""
        import sys, time
        from slimkit.scratch import make_scratch
        folder = make_scratch()
        (folder / "big.bin").write_bytes(b"x" * 1_000_000)
        print(folder, flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env=child_env(tmpdir_private))
    try:
        left = Path(child.stdout.readline().strip())
        assert left.is_dir() and scratch.read_owner(left)["pid"] == child.pid
        assert scratch.reclaim_dead_scratch() == []  # alive: untouched
        assert left.exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert left.exists()  # kill -9 ran no cleanup
    mine = scratch.make_scratch()
    assert not left.exists()
    assert slimkit_folders(tmpdir_private) == [mine]
    scratch.remove_scratch(mine)


def test_zombie_owner_counts_as_dead(tmpdir_private):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.time() + 30
        while scratch._proc_stat(child.pid)[0] != "Z" and time.time() < deadline:
            time.sleep(0.05)
        folder = fake_scratch(tmpdir_private, "slimkit-work-zombie", scratch.process_identity(child.pid))
        assert scratch.reclaim_dead_scratch() == [folder]
    finally:
        child.wait()


def test_context_creates_no_folder_until_used(tmpdir_private):
    ctx = Context()
    repr(ctx)
    assert slimkit_folders(tmpdir_private) == []
    sub = ctx.scratch("pass")
    assert sub.parent == ctx.workdir and ctx.workdir.parent == tmpdir_private
    assert scratch.read_owner(ctx.workdir)["pid"] == os.getpid()
    given = Context(workdir=tmpdir_private / "given")
    assert given.workdir == tmpdir_private / "given" and not given.workdir.exists()
    scratch.remove_scratch(ctx.workdir)


def test_scratch_is_removed_at_normal_exit_but_not_by_a_forked_child(tmpdir_private):
    code = textwrap.dedent("""
        import os
        from slimkit.passes.base import Context
        from slimkit.scratch import make_scratch
        kept = make_scratch("slimkit-onnx-")
        Context().scratch("x")
        pid = os.fork()
        if pid == 0:
            raise SystemExit(0)  # the child runs atexit handlers: they must leave the parent's scratch alone
        os.waitpid(pid, 0)
        assert kept.exists(), "a forked child removed its parent's scratch"
    """)
    subprocess.run([sys.executable, "-c", code], env=child_env(tmpdir_private), check=True, timeout=120)
    assert slimkit_folders(tmpdir_private) == []


def test_optimize_leaves_no_scratch(tmpdir_private):
    code = textwrap.dedent("""
        import torch
        import slimkit
        from slimkit.demo_models import DigitsMLP
        model = slimkit.load(DigitsMLP().eval(), example_inputs=torch.zeros(1, 64))
        result = slimkit.optimize(model, "onnx", measure=True, max_eval_samples=8)
        assert result.model.path.exists()
        print(result.model.path)
    """)
    done = subprocess.run([sys.executable, "-c", code], env=child_env(tmpdir_private), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.strip().splitlines()[-1]).is_relative_to(tmpdir_private)
    assert slimkit_folders(tmpdir_private) == []


def test_killed_optimize_leaves_scratch_the_next_run_reclaims(tmpdir_private):
    code = textwrap.dedent("""
        import time
        import torch
        import slimkit
        from slimkit.demo_models import DigitsMLP

        def progress(message):
            if message.startswith("running pass"):
                print("running", flush=True)
                time.sleep(120)  # killed here, mid-run, with the work folder in use

        model = slimkit.load(DigitsMLP().eval(), example_inputs=torch.zeros(1, 64))
        slimkit.optimize(model, "onnx", measure=False, progress=progress)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env=child_env(tmpdir_private))
    try:
        assert child.stdout.readline().strip() == "running"
        left = [p for p in slimkit_folders(tmpdir_private) if p.name.startswith("slimkit-work-")]
        assert len(left) == 1
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert left[0].exists()
    assert scratch.reclaim_dead_scratch() == left


def test_scratch_made_outside_a_context_is_owned(tmpdir_private):
    import onnx
    from onnx import TensorProto, helper

    from slimkit.models.base import OnnxModel
    from slimkit.passes.quantize import quiet_quantizer

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = OnnxModel.from_proto(helper.make_model(graph)).ensure_file()
    assert path.parent.parent == tmpdir_private and scratch.read_owner(path.parent)["pid"] == os.getpid()
    onnx.checker.check_model(str(path))
    with quiet_quantizer():
        cwd = Path.cwd()
        assert cwd.parent == tmpdir_private.resolve() and scratch.read_owner(cwd)["pid"] == os.getpid()
    assert not cwd.exists()
    scratch.remove_scratch(path.parent)
