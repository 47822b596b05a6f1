"""The `netvlad-tf` command line, parsed in-process through `main(argv)`."""

import json

import pytest

from netvlad_tf.cli import COMMANDS, main


def test_usage_and_help(capsys):
    assert main(["netvlad-tf"]) == 2
    assert main(["netvlad-tf", "--help"]) == 0
    assert "demo" in capsys.readouterr().out
    for name in COMMANDS:
        assert main(["netvlad-tf", name, "--help"]) == 0
        out = capsys.readouterr().out
        assert "example:" in out and f"netvlad-tf {name}" in out


def test_unknown_command_and_flag(capsys):
    assert main(["netvlad-tf", "trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err
    assert main(["netvlad-tf", "demo", "--qiuck"]) == 2
    assert "--help" in capsys.readouterr().err


def test_flagfile(tmp_path, capsys):
    (tmp_path / "demo.flags").write_text(f"--output={tmp_path}\n")
    # The output exists already, so the run stops at once with a message saying what to do.
    assert main(["netvlad-tf", "demo", f"--flagfile={tmp_path / 'demo.flags'}"]) == 1
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    import re
    import subprocess
    import sys

    import numpy as np

    output = tmp_path / "demo"
    with open(tmp_path / "demo.log", "w") as log:  # a log file, as under nohup or CI: not a terminal
        subprocess.run([sys.executable, "-m", "netvlad_tf_cli", "demo", "--quick", f"--output={output}"],
                       check=True, timeout=900, stdout=log, stderr=subprocess.STDOUT)
    text = (tmp_path / "demo.log").read_text()
    assert not re.search(r"[\x1b\r\x08]", text), "escape codes or carriage returns in the demo's log"
    assert "deprecat" not in text.lower(), [line for line in text.splitlines() if "deprecat" in line.lower()]
    results = json.loads((output / "results.json").read_text())
    for method in ("netvlad", "netvlad_whitened", "netvlad_untrained", "mac", "pixels"):
        curve = [results["recall"][method][n] for n in ("1", "5", "10")]
        # A recall is a count of queries over their number, and cannot fall as N grows.
        assert all(abs(r * results["num_queries"] - round(r * results["num_queries"])) < 1e-6 for r in curve)
        assert curve == sorted(curve), method
    assert results["recall"]["pixels"]["10"] >= results["recall"]["pixels"]["1"]
    # The README's claim, in small: six training steps already lift NetVLAD's recall above its
    # k-means initialisation (quick run here: 27.5/55.8/73.3 against 25.8/52.5/70.8), and NetVLAD
    # beats MAC pooling on the same backbone.
    mean_recall = {method: np.mean([results["recall"][method][n] for n in ("1", "5", "10")])
                   for method in ("netvlad", "netvlad_untrained", "mac")}
    assert mean_recall["netvlad"] > mean_recall["netvlad_untrained"] > mean_recall["mac"], mean_recall
    assert (output / "model.keras").stat().st_size > 1_000_000
    assert (output / "recall_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (output / "netvlad_evaluation" / "gallery.png").is_file()
    assert len(results["training_loss"]) == 1 and results["training_loss"][0] > 0
    assert results["tflite"]["passed"] and (output / "model_int8.tflite").is_file()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(output / "model_int8.tflite"))
    assert any(tensor["dtype"] == np.int8 and "conv" in tensor["name"]
               for tensor in interpreter.get_tensor_details()), "the demo ships full int8"
    assert tuple(interpreter.get_input_details()[0]["shape"][1:3]) == tuple(results["settings"]["image_size"])


@pytest.mark.parametrize(
    "flags_given, message",
    [
        ([], "Missing required flag: --dataset"),
        (["--dataset=x.csv", "--resume=runs/a", "--model=m.keras"], "drop --model"),
        (["--dataset=x.csv", "--num_negatives=20", "--num_sampled_negatives=10"], "cannot exceed"),
        (["--dataset=x.csv", "--image_size=480x640"], "HEIGHT,WIDTH"),
        (["--dataset=missing.csv", "--image_size=64,128"], "does not exist"),
        (["--dataset=data.mat", "--image_size=64,128"], "--image_root"),
    ],
)
def test_train_flag_validation(capsys, flags_given, message):
    assert main(["netvlad-tf", "train", *flags_given]) == 1
    assert message in capsys.readouterr().err


def test_paper_flagfiles_parse():
    from pathlib import Path

    from absl import flags

    from netvlad_tf.commands import train

    for flagfile in sorted((Path(__file__).parents[2] / "training").glob("*.flags")):
        values = flags.FlagValues()
        train.define_flags(values)
        values(["netvlad-tf train", f"--flagfile={flagfile}"])
        assert values.dataset and values.image_size


@pytest.mark.slow
def test_cluster_pca_and_export_commands(tmp_path, capsys):
    import keras
    import numpy as np

    from netvlad_tf import build_netvlad_model
    from netvlad_tf.sample_data import nordland_csv
    from tests.support.tiny_backbone import TINY_BACKBONE

    base = tmp_path / "base.keras"
    build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4).save(base)
    dataset = str(nordland_csv("test"))
    cluster = ["netvlad-tf", "cluster", f"--model={base}", f"--dataset={dataset}", "--image_size=32,64",
               "--cluster_images=20", "--num_descriptors=100", "--descriptors_per_image=5"]
    assert main([*cluster, f"--output={tmp_path / 'init.keras'}"]) == 0
    initialised = keras.models.load_model(tmp_path / "init.keras")
    assert not np.allclose(initialised.pooling.centroids, keras.models.load_model(base).pooling.centroids)
    # In place: refused without --overwrite (the file untouched), replaced atomically with it.
    before = base.read_bytes()
    assert main([*cluster, f"--output={base}"]) == 1
    assert "pass --overwrite" in capsys.readouterr().err and base.read_bytes() == before
    assert main([*cluster, f"--output={base}", "--overwrite"]) == 0
    assert base.read_bytes() != before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["base.keras", "init.keras"]
    assert main(["netvlad-tf", "pca", f"--model={tmp_path / 'init.keras'}", f"--dataset={dataset}",
                 "--image_size=32,64", "--whitening_dim=8", f"--output={tmp_path / 'white.keras'}"]) == 0
    assert keras.models.load_model(tmp_path / "white.keras").descriptor_dim == 8
    assert main(["netvlad-tf", "pca", f"--model={tmp_path / 'init.keras'}", f"--dataset={dataset}",
                 "--image_size=32,64", "--whitening_dim=5000", f"--output={tmp_path / 'x.keras'}"]) == 1
    assert "output_dim=5000 exceeds the rank" in capsys.readouterr().err
    assert main(["netvlad-tf", "export", f"--model={tmp_path / 'white.keras'}", "--format=tflite",
                 "--quantize=none", "--image_size=32,64", f"--output={tmp_path / 'm.tflite'}"]) == 0
    assert '"passed": true' in capsys.readouterr().out
    assert main(["netvlad-tf", "export", f"--model={tmp_path / 'white.keras'}", "--format=saved_model",
                 "--quantize=int8", f"--output={tmp_path / 'sm'}"]) == 1
    assert "--format=tflite only" in capsys.readouterr().err


def test_export_flagfiles_parse():
    from pathlib import Path

    from absl import flags

    from netvlad_tf.commands import export

    for flagfile in sorted((Path(__file__).parents[2] / "export").glob("*.flags")):
        values = flags.FlagValues()
        export.define_flags(values)
        values(["netvlad-tf export", f"--flagfile={flagfile}"])
        assert values.output and values.format in ("saved_model", "tflite")


def test_convert_command(tmp_path, capsys):
    from pathlib import Path

    import keras
    import numpy as np

    fixtures = Path(__file__).parents[1] / "fixtures"
    output = tmp_path / "port.keras"
    assert main(["netvlad-tf", "convert", "--source=pytorch",
                 f"--input={fixtures / 'pytorch_netvlad_checkpoint.pth.tar'}", f"--output={output}"]) == 0
    assert "24-D descriptors" in capsys.readouterr().out
    expected = np.load(fixtures / "pytorch_netvlad_expected.npz")
    reloaded = keras.models.load_model(output)
    np.testing.assert_allclose(reloaded.predict(expected["images"], verbose=0), expected["descriptors"], atol=1e-5)
    before = output.read_bytes()
    assert main(["netvlad-tf", "convert", "--source=pytorch",
                 f"--input={fixtures / 'pytorch_netvlad_checkpoint.pth.tar'}", f"--output={output}"]) == 1
    assert "pass --overwrite" in capsys.readouterr().err and output.read_bytes() == before
    assert main(["netvlad-tf", "convert", "--source=pytorch", f"--input={tmp_path / 'nope.pth'}",
                 f"--output={tmp_path / 'x.keras'}"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_resume_of_a_missing_or_finished_run_is_an_error(tmp_path, capsys):
    from netvlad_tf.sample_data import nordland_csv

    dataset = f"--dataset={nordland_csv('test')}"
    assert main(["netvlad-tf", "train", dataset, f"--resume={tmp_path / 'nope'}"]) == 1
    assert "no such run folder" in capsys.readouterr().err
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "last.keras").write_bytes(b"x")
    assert main(["netvlad-tf", "train", dataset, f"--resume={tmp_path / 'done'}"]) == 1
    assert "that run finished" in capsys.readouterr().err
    assert sorted(path.name for path in (tmp_path / "done").iterdir()) == ["last.keras"]


@pytest.mark.slow  # a fresh process
def test_the_console_script_starts_without_tensorflow_log_lines():
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, "-m", "netvlad_tf_cli", "evaluate", "--help"],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0 and "netvlad-tf evaluate" in completed.stdout
    noise = [line for line in completed.stderr.splitlines()
             if any(mark in line for mark in ("I0000", "E0000", "W0000", "absl::", "cuda", "oneDNN"))]
    assert noise == [], noise


@pytest.mark.slow
def test_train_with_a_mining_pool_under_a_mirrored_strategy_on_the_bundled_data(tmp_path, capsys):
    from netvlad_tf.sample_data import nordland_csv
    from tests.support.training_data import IMAGE_SIZE, initialised_model, nordland_stretch

    model_file = tmp_path / "start.keras"
    initialised_model(nordland_stretch(count=40)).save(model_file)
    assert main(["netvlad-tf", "train", f"--model={model_file}", f"--dataset={nordland_csv('train')}",
                 f"--output_root={tmp_path / 'runs'}", "--image_size=" + ",".join(map(str, IMAGE_SIZE)),
                 "--epochs=1", "--batch_size=4", "--num_negatives=2", "--num_sampled_negatives=20",
                 "--refresh_every=100", "--mining_pool=30", "--strategy=mirrored"]) == 0
    out = capsys.readouterr().out
    assert "a pool of 30" in out and out.count("Refreshing the descriptor cache") >= 2
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "last.keras").is_file()


def test_multi_worker_training_without_tf_config_is_a_clear_error(capsys, monkeypatch):
    from netvlad_tf.sample_data import nordland_csv

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(["netvlad-tf", "train", f"--dataset={nordland_csv('train')}", "--strategy=multi_worker"]) == 1
    assert "TF_CONFIG environment variable, which is not set" in capsys.readouterr().err


@pytest.mark.slow
def test_train_on_two_workers_writes_one_run_folder(tmp_path):
    """`netvlad-tf train --strategy=multi_worker` in two processes (TF_CONFIG over 127.0.0.1) on
    40 bundled places: both finish, the chief alone fills `--output_root/--run_name`."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from netvlad_tf.sample_data import nordland_csv
    from tests.support.training_data import IMAGE_SIZE, initialised_model, nordland_stretch
    from tests.training.test_distributed import finish_all, free_ports

    stretch = nordland_stretch(count=40)
    model_file = tmp_path / "start.keras"
    initialised_model(stretch).save(model_file)
    source = Path(nordland_csv("train"))
    rows = source.read_text().splitlines()
    kept = {str(Path(path).relative_to(source.parent)) for path in (*stretch.database_paths, *stretch.query_paths)}
    csv_file = tmp_path / "stretch.csv"  # the 40 places, their images named by absolute paths
    csv_file.write_text("\n".join([rows[0], *(row.replace(",", f",{source.parent}/", 1) for row in rows[1:]
                                               if row.split(",")[1] in kept)]) + "\n")
    root = Path(__file__).resolve().parents[2]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    command = ("import sys, tests.support.tiny_backbone; from netvlad_tf.cli import main; "
               "sys.exit(main(sys.argv[1:]))")
    flags = ["netvlad-tf", "train", f"--model={model_file}", f"--dataset={csv_file}",
             f"--output_root={tmp_path / 'runs'}", "--run_name=shared", "--strategy=multi_worker",
             "--image_size=" + ",".join(map(str, IMAGE_SIZE)), "--epochs=1", "--batch_size=4", "--num_negatives=2",
             "--num_sampled_negatives=10", "--refresh_every=20"]
    finish_all([subprocess.Popen(
        [sys.executable, "-c", command, *flags], cwd=root, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(root), "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})}) for index in range(2)])
    run_dir = tmp_path / "runs" / "shared"
    assert sorted(path.name for path in run_dir.iterdir()) == ["epoch_logs.json", "history.json", "last.keras",
                                                                 "logs"]
