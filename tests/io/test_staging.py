"""The one atomic writer: all or nothing, no silent replacement, umask honoured, stale entries cleaned."""

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from netvlad_tf.io.atomic_writes import (
    atomic_directory,
    atomic_file,
    remove_stale_staging,
    write_bytes_atomically,
)


def test_a_target_that_appears_while_writing_is_not_replaced(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(FileExistsError, match="appeared while this run was writing"):
        with atomic_directory(target) as first:
            (first / "who").write_text("first")
            with atomic_directory(target) as second:  # a second run, started before either commits
                (second / "who").write_text("second")
    assert (target / "who").read_text() == "second"
    assert [entry.name for entry in tmp_path.iterdir()] == ["out"], "no staging entry left"


def _write_after_barrier(target, barrier, label, results):
    try:
        with atomic_file(target) as staging:
            staging.write_text(label)
            barrier.wait()
        results.put((label, "ok"))
    except FileExistsError as error:
        results.put((label, str(error)))


def test_two_processes_writing_one_file_exactly_one_succeeds(tmp_path):
    target = tmp_path / "model.tflite"
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_write_after_barrier, args=(target, barrier, label, results))
               for label in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    outcomes = dict(results.get(timeout=5) for _ in workers)
    winners = [label for label, outcome in outcomes.items() if outcome == "ok"]
    assert len(winners) == 1
    loser = "b" if winners == ["a"] else "a"
    assert "appeared while this run was writing" in outcomes[loser]
    assert target.read_text() == winners[0]


@pytest.mark.parametrize("existing", ["file", "folder"])
def test_overwrite_replaces_and_refusal_keeps(tmp_path, existing):
    target = tmp_path / "out"
    make = atomic_file if existing == "file" else atomic_directory
    with make(target) as staging:
        (staging if existing == "file" else staging / "a").write_text("old")
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        with make(target) as staging:
            raise AssertionError("the block must not run")
    with make(target, overwrite=True) as staging:
        (staging if existing == "file" else staging / "a").write_text("new")
    assert (target if existing == "file" else target / "a").read_text() == "new"
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["out"]


def test_an_error_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "out") as staging:
            (staging / "half").write_text("x")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_bytes_atomically(tmp_path / "model.tflite", b"x")
        with atomic_directory(tmp_path / "saved_model") as staging:
            (staging / "saved_model.pb").write_bytes(b"x")
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "saved_model").stat().st_mode & 0o777) == oct(0o755)


@pytest.mark.slow  # a fresh process
def test_a_kill_during_an_in_place_save_keeps_the_old_file_and_the_next_write_cleans_up(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"old model")
    script = textwrap.dedent(f"""
        import os, signal
        from netvlad_tf.io.atomic_writes import atomic_file
        with atomic_file({str(target)!r}, overwrite=True) as staging:
            staging.write_bytes(b"half a mod")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert completed.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old model"
    stale = [entry for entry in tmp_path.iterdir() if entry != target]
    assert len(stale) == 1 and stale[0].name.startswith(".model.keras.")
    assert remove_stale_staging(target) == stale
    assert list(tmp_path.iterdir()) == [target]


def test_a_live_writer_s_staging_entry_is_not_removed(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as staging:
        assert remove_stale_staging(target) == []
        assert staging.exists()
