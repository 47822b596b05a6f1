"""Progress off a terminal is plain lines (no escape codes) at an interval, with rate and time
left; on a terminal it is Keras' bar."""

import io
import re
import sys

import pytest

from netvlad_tf.io import progress as progress_module
from netvlad_tf.io.progress import Progress, fit_verbosity

CONTROL = re.compile(r"[\x1b\r\x08]")


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    return now


def test_off_a_terminal_lines_come_at_the_interval_with_rate_and_time_left(monkeypatch, capsys, clock):
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # a log file: not a TTY
    progress = Progress(1000, "image", label="embedding", interval=30)
    for done in range(0, 1001, 10):  # 10 images a second
        clock[0] += 1
        progress.update(done)
    lines = sys.stdout.getvalue().splitlines()
    assert not CONTROL.search(sys.stdout.getvalue())
    # t = 30, 60, 90 s: 290, 590, 890 images; then the end at 101 s.
    assert lines[0] == "embedding: 290/1000 images (29%), 9.67 images/s, 1:13 left"
    assert [line.split(":")[1].split()[0] for line in lines] == ["290/1000", "590/1000", "890/1000", "1000/1000"]
    assert lines[-1] == "embedding: 1000/1000 images (100%), 9.90 images/s, 1:41 elapsed"


def test_silent_and_unknown_totals(monkeypatch, clock):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    Progress(10, verbose=False, interval=0).update(10)
    assert sys.stdout.getvalue() == ""
    progress = Progress(None, "byte", label="downloading", interval=0)
    clock[0] += 2
    progress.update(4096)
    assert sys.stdout.getvalue() == "downloading: 4096 bytes, 2048.00 bytes/s, 0:02 elapsed\n"


def test_on_a_terminal_it_is_keras_bar(monkeypatch):
    monkeypatch.setattr(progress_module, "interactive", lambda: True)
    progress = Progress(10, "image")
    assert progress._bar is not None and progress._bar.target == 10
    progress.total = 20
    assert progress._bar.target == 20


def test_fit_prints_a_line_per_epoch_in_a_log(monkeypatch):
    monkeypatch.setattr(progress_module, "interactive", lambda: False)
    assert fit_verbosity(1) == 2 and fit_verbosity("auto") == 2 and fit_verbosity(0) == 0
    monkeypatch.setattr(progress_module, "interactive", lambda: True)
    assert fit_verbosity(1) == 1
