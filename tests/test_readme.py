"""The examples of the README and of docs/usage.md run as written: the README's quick start as a
doctest (its printed values checked), the other Python blocks as scripts."""

import doctest
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
USAGE = Path(__file__).resolve().parents[1] / "docs" / "usage.md"


@pytest.mark.slow
def test_the_readme_quick_start_runs_as_a_doctest(tmp_path, monkeypatch):
    sessions = re.findall(r"```pycon\n(.*?)```", README.read_text(), flags=re.S)
    assert sessions, "README.md has no quick start session"
    monkeypatch.chdir(tmp_path)
    test = doctest.DocTestParser().get_doctest("".join(sessions), {}, "README quick start", str(README), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert (tmp_path / "netvlad.keras").is_file()


def test_a_wrong_printed_value_fails_the_doctest_runner():
    """The check above can fail: a session whose printed value is wrong is a failure."""
    test = doctest.DocTestParser().get_doctest(">>> 1 + 1\n3\n", {}, "wrong", "wrong", 0)
    runner = doctest.DocTestRunner()
    runner.run(test, out=lambda text: None)
    assert runner.summarize(verbose=False).failed == 1


@pytest.mark.slow
@pytest.mark.parametrize("document", [README, USAGE], ids=["README", "usage"])
def test_python_blocks_run(tmp_path, monkeypatch, document):
    blocks = re.findall(r"```python\n(.*?)```", document.read_text(), flags=re.S)
    assert blocks, f"{document.name} has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace = {}  # the blocks build on each other, as in a notebook
    for block in blocks:
        exec(compile(block, str(document), "exec"), namespace)
