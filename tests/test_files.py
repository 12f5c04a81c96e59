import json
import os

import pytest
from PIL import Image

from framemem.errors import FrameMemError
from framemem.files import atomic_path, default_permissions, read_jsonl, save_image, write_json


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    write_json(path, {"step": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text('{"step": 2, "half')
            raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_images_keep_the_format_of_their_extension(tmp_path):
    from framemem.plots import plt

    save_image(Image.new("RGB", (4, 3), "red"), tmp_path / "sub" / "frame.png")
    fig = plt.figure(figsize=(1, 1))
    save_image(fig, tmp_path / "curve.png", dpi=50)
    plt.close(fig)
    assert Image.open(tmp_path / "sub" / "frame.png").format == "PNG"
    assert Image.open(tmp_path / "curve.png").size == (50, 50)


def test_jsonl_leaves_out_a_torn_last_line_but_not_a_damaged_one(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')  # a run appending, or killed mid-append
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(FrameMemError, match="line 2"):
        read_jsonl(path)


def test_written_files_follow_the_umask_not_the_private_mode_of_their_temporary(tmp_path):
    mask = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "shard.bin") as tmp:
            tmp.write_bytes(b"x")
            tmp.chmod(0o600)  # what safetensors and mkstemp create
        (tmp_path / "folder" / "sub").mkdir(parents=True, mode=0o700)
        (tmp_path / "folder" / "sub" / "w.bin").write_bytes(b"x")
        default_permissions(tmp_path / "folder")
    finally:
        os.umask(mask)
    assert (tmp_path / "shard.bin").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "folder" / "sub").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "folder" / "sub" / "w.bin").stat().st_mode & 0o777 == 0o640
