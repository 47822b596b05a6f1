"""The Python examples of the README and of docs/usage.md run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
USAGE = Path(__file__).resolve().parents[1] / "docs" / "usage.md"


@pytest.mark.slow
@pytest.mark.parametrize("document", [README, USAGE], ids=["README", "usage"])
def test_python_blocks_run(tmp_path, monkeypatch, document):
    blocks = re.findall(r"```python\n(.*?)```", document.read_text(), flags=re.S)
    assert blocks, f"{document.name} has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace = {}  # the blocks build on each other, as in a notebook
    for block in blocks:
        exec(compile(block, str(document), "exec"), namespace)
    assert (tmp_path / "netvlad.keras").is_file()
