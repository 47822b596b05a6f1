"""tf.distribute: `model.fit` and `train()` under MirroredStrategy on two logical CPUs and
under MultiWorkerMirroredStrategy over two processes on 127.0.0.1 give the same update as one
device. Each configuration runs in its own process (devices and TF_CONFIG are fixed when
TensorFlow starts)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_mode(mode, output, extra_env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra_env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.distributed.run_strategy", mode, str(output)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def finish_all(processes):
    """Waits for every process (300 s each); on a failure or timeout the others are killed."""
    try:
        for process in processes:
            output, _ = process.communicate(timeout=300)
            assert process.returncode == 0, output[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def weights(npz, prefix="w"):
    return [npz[k] for k in sorted(npz.files, key=lambda k: (len(k), k)) if k.startswith(prefix) and k[len(prefix):].isdigit()]


@pytest.mark.slow
def test_mirrored_and_two_workers_match_one_device(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = [run_mode("single", tmp_path / "single.npz"), run_mode("mirrored", tmp_path / "mirrored.npz"),
                 run_mode("mirrored_mining", tmp_path / "mirrored_mining.npz")]
    processes += [
        run_mode("worker", tmp_path / f"worker{i}.npz",
                 {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
        for i in range(2)
    ]
    finish_all(processes)
    single = np.load(tmp_path / "single.npz")
    assert any(not np.allclose(w, w0) for w, w0 in zip(weights(single), weights(single, "initial")))
    for name in ("mirrored", "worker0", "worker1"):
        other = np.load(tmp_path / f"{name}.npz")
        assert int(other["replicas"]) == 2
        np.testing.assert_allclose(other["losses"], single["losses"], rtol=1e-5)
        for a, b in zip(weights(other), weights(single)):
            np.testing.assert_allclose(a, b, atol=1e-6)
    mined = np.load(tmp_path / "mirrored_mining.npz")  # fit on mined tuples, cache refreshes included
    assert int(mined["replicas"]) == 2 and np.isfinite(mined["losses"]).all() and int(mined["refreshes"]) >= 2
    worker0, worker1 = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    for a, b in zip(weights(worker0), weights(worker1)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_train_under_mirrored_and_two_workers_matches_one_device(tmp_path):
    """`train(strategy=...)` with MirroredStrategy over two logical CPUs and with
    MultiWorkerMirroredStrategy over two processes (127.0.0.1, one run folder as on a shared
    file system) rebuilds the model in the scope, trains it and copies the weights back: after
    3 steps on the same mined tuples (a cache of 30 bundled images) they equal one device's.
    Tolerance 1e-6: the replicas sum two halves of each gradient in float32 (measured
    differences ~3e-8), while one step moves the weights by ~1e-3. Without the placeholder
    first iterator (Keras reads one batch from an iterator it then drops) the tuple stream
    shifts and the weights differ by ~1e-3; without `MultiWorkerFit`, `fit` fails on the workers.
    The second worker starts from weights shifted by 0.1: without `chief_weights` its run differs."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    runs = {"single": ("single", tmp_path / "single", None), "mirrored": ("mirrored", tmp_path / "mirrored", None)}
    runs.update({f"worker{i}": ("worker", tmp_path / "shared", {"TF_CONFIG": json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": i}})}) for i in range(2)})
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "tests.distributed.run_train_strategy", mode, str(tmp_path / f"{name}.npz"),
             str(run_dir)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, (mode, run_dir, extra) in runs.items()
    }
    finish_all(list(processes.values()))
    results = {name: np.load(tmp_path / f"{name}.npz") for name in runs}
    single = results["single"]
    count = len([key for key in single.files if key.startswith("trained")])
    assert count == 5  # conv kernel and bias, NetVLAD centroids, assignment kernel and bias
    for i in range(count):
        assert not np.allclose(single[f"trained{i}"], single[f"initial{i}"], atol=1e-5), "training changed nothing"
    for name in ("mirrored", "worker0", "worker1"):
        assert int(results[name]["replicas"]) == 2, name
        for i in range(count):
            np.testing.assert_allclose(results[name][f"trained{i}"], single[f"trained{i}"], atol=1e-6, err_msg=name)
        np.testing.assert_allclose(results[name]["loss"], single["loss"], rtol=1e-5, err_msg=name)
    # The chief (worker 0) wrote the shared run folder; the other worker's own folder is gone.
    assert bool(results["worker0"]["chief"]) and not bool(results["worker1"]["chief"])
    assert (tmp_path / "shared" / "last.keras").is_file() and (tmp_path / "shared" / "history.json").is_file()
    assert not (tmp_path / "shared" / "workers").exists()


@pytest.mark.slow
def test_a_killed_two_worker_train_resumes(tmp_path):
    """Two workers killed after epoch 1 of 2 resume from their backups (the chief's in the run
    folder, the other's in its own), run only epoch 2, and end with the same weights."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    finish_all([subprocess.Popen(
        [sys.executable, "-m", "tests.distributed.run_train_strategy", "worker_resume", str(tmp_path / f"worker{i}.npz"),
         str(tmp_path / "shared")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT),
             "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
        for i in range(2)])
    chief, other = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    assert "backup" in chief["backups"].tolist() and "workers/worker-1/backup" in other["backups"].tolist()
    for result in (chief, other):
        assert result["epochs_run"].tolist() == [1] and len(result["loss"]) == 2
    for i in range(len([key for key in chief.files if key.startswith("trained")])):
        np.testing.assert_array_equal(chief[f"trained{i}"], other[f"trained{i}"])
    assert (tmp_path / "shared" / "last.keras").is_file() and not (tmp_path / "shared" / "backup").exists()
    assert not (tmp_path / "shared" / "workers").exists()
