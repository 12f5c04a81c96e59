"""The README's quickstart runs as written: its Python blocks and its command-line block."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import av

README = Path(__file__).parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    quickstart = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", quickstart, flags=re.S)


def frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_readme_python_quickstart_generates_then_retrieves(tmp_path, monkeypatch, capsys):
    code = blocks("python")
    assert len(code) == 2  # generation, then retrieval
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in code:
        exec(compile(block, str(README), "exec"), namespace)
    assert frame_count(tmp_path / "story.mp4") == 24  # 6 s at 4 fps
    assert (tmp_path / "retrieved_1.0s.png").is_file()
    full, memory = map(int, re.search(r"(\d+) full-context tokens -> (\d+) memory tokens", capsys.readouterr().out).groups())
    assert memory * 8 <= full  # 4x4x2 compression, on top of the patchifier
    assert [s["prompt"] for s in namespace["out"].sections][-1] == "a patch of grass, the camera zooms in"


def test_readme_command_line_quickstart_runs(tmp_path):
    (script,) = blocks("bash")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert frame_count(tmp_path / "story.mp4") == 24
    assert (tmp_path / "story.json").is_file() and (tmp_path / "retrieved" / "metrics.json").is_file()
