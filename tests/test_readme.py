"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace = {}  # the blocks build on each other, as in a notebook
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert (tmp_path / "netvlad.keras").is_file()
