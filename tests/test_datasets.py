"""Users' data for the video, editing and video-context tasks: the layouts export-dataset writes, decoding to the
run's sizes, broken samples skipped and counted, and a few training steps of each task from folders and shards."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from metacanvas_core.__main__ import main as cli
from metacanvas_core.builtin import ASSETS, PLANNER
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.training.data import BrokenSample, DataStream
from metacanvas_core.training.datasets import LAYOUTS, Sizes, TaskDataset, world_samples, write_dataset
from metacanvas_core.training.media import decode_clip, encode_clip

WAN = ASSETS / "wan_t2v"
CLIP = Sizes(32, 17, 8.0)


def export(tmp_path, task: str, fmt: str, n: int = 4, video_format: str = "mp4"):
    out = tmp_path / f"{task}-{fmt}-{video_format}"
    assert cli(["export-dataset", "--task", task, "--n", str(n), "--out", str(out), "--format", fmt,
                "--video-format", video_format]) == 0
    return out


def ramp(frames: int, size: int = 32) -> np.ndarray:
    """A clip whose frame f is filled with grey level 8 f: which frame was picked is readable from any pixel."""
    return np.stack([np.full((size, size, 3), 8 * f, np.uint8) for f in range(frames)])


def test_clips_are_resampled_to_the_run_fps_from_their_start():
    clip = ramp(31)  # 31 frames at 24 fps: 1.25 s
    data = encode_clip(clip, 24.0, "mp4")
    got = decode_clip(data, "x.mp4", 32, 9, 8.0)  # 9 frames at 8 fps: t = 0, 0.125, ..., 1.0 s -> every 3rd frame
    assert [int(f[0, 0, 0]) // 8 for f in got] == [0, 3, 6, 9, 12, 15, 18, 21, 24]
    slow = decode_clip(encode_clip(ramp(5), 4.0, "mp4"), "y.mp4", 32, 9, 8.0)  # 4 fps shown at 8: each frame twice
    assert [int(f[0, 0, 0]) // 8 for f in slow] == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    with pytest.raises(BrokenSample, match="need more than 2.00 s"):
        decode_clip(data, "x.mp4", 32, 17, 8.0)  # 2 s asked of a 1.25 s clip: never stretched or looped


def test_clips_are_centre_cropped_and_never_upscaled():
    wide = np.zeros((5, 32, 64, 3), np.uint8)
    wide[:, :, 16:48] = 200  # the centre 32 columns
    got = decode_clip(encode_clip(wide, 8.0, "mp4"), "w.mp4", 16, 5, 8.0)
    assert got.shape == (5, 16, 16, 3) and got[:, :, 1:-1].min() > 190  # (bicubic rings at the crop edge)
    with pytest.raises(BrokenSample, match="smaller than the training resolution"):
        decode_clip(encode_clip(wide, 8.0, "mp4"), "w.mp4", 48, 5, 8.0)


@pytest.mark.parametrize("task", ["t2v", "edit", "video-edit", "in-context"])
@pytest.mark.parametrize("fmt", ["folder", "tar"])
def test_exported_worlds_read_back_exactly(tmp_path, task, fmt):
    """What export-dataset writes is what the dataset reads, pixel for pixel (lossless mp4 / PNG)."""
    layout = "t2v" if task == "t2v" else task
    out = export(tmp_path, task, fmt)
    want = world_samples(layout, 4, 0)
    ds = TaskDataset(out, layout, CLIP)
    assert len(ds) == 4
    for i, (media, text) in enumerate(want):
        rec = ds.load(i)
        assert rec.text == text and set(rec.media) == set(LAYOUTS[layout][0])
        for field, value in media.items():
            got = rec.media[field]
            if field == "references":
                assert len(got) == len(value) and all(np.array_equal(a, b) for a, b in zip(got, value))
            else:
                assert np.array_equal(got, value), field
    ds.close()


def test_frame_folders_and_gifs_are_clips_too(tmp_path):
    want = world_samples("t2v", 2, 0)
    for video_format in ("frames", "gif"):
        ds = TaskDataset(export(tmp_path, "t2v", "folder", 2, video_format), "t2v", CLIP)
        assert all(np.array_equal(ds.load(i).media["file_name"], want[i][0]["file_name"]) for i in range(2))


def test_broken_clips_are_skipped_and_counted(tmp_path, capsys):
    out = export(tmp_path, "t2v", "folder")
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    (out / rows[1]["file_name"]).write_bytes(b"not a video")
    rows[2]["text"] = ""
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stream = DataStream(TaskDataset(out, "t2v", CLIP), seed=0, strict=False)
    skipped = [name for g in range(4) for name in stream[g][1]]
    assert len(set(skipped)) == 2 and "skipped broken sample" in capsys.readouterr().err
    with pytest.raises(MetaCanvasError, match="--strict"):
        strict = DataStream(TaskDataset(out, "t2v", CLIP), seed=0, strict=True)
        [strict[g] for g in range(4)]


def test_a_black_given_image_is_a_broken_sample_and_a_black_target_is_not(tmp_path):
    """An edit's source (and a reference) is given: all black is a failed export, skipped as sampling refuses it; an
    all-black target can be a true edit ("remove the only object")."""
    from PIL import Image

    out = export(tmp_path, "edit", "folder")
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    black = np.zeros((32, 32, 3), np.uint8)
    Image.fromarray(black).save(out / rows[1]["source"])
    Image.fromarray(black).save(out / rows[2]["target"])
    ds = TaskDataset(out, "edit", Sizes(32))
    with pytest.raises(BrokenSample, match="source is all black"):
        ds.load(1)
    assert not ds.load(2).media["target"].any()
    refs = export(tmp_path, "in-context", "folder")
    row = json.loads((refs / "metadata.jsonl").read_text().splitlines()[0])
    Image.fromarray(black).save(refs / row["references"][-1])
    with pytest.raises(BrokenSample, match="references is all black"):
        TaskDataset(refs, "in-context", CLIP).load(0)


def test_missing_pyav_is_one_clear_error(tmp_path, monkeypatch):
    out = export(tmp_path, "t2v", "tar")
    monkeypatch.setitem(sys.modules, "av", None)  # as if not installed
    with pytest.raises(MetaCanvasError, match="pip install av"):
        TaskDataset(out, "t2v", CLIP).load(0)


def test_a_folder_without_a_layout_says_which_fields(tmp_path):
    with pytest.raises(MetaCanvasError, match="source, target and 'instruction'"):
        TaskDataset(tmp_path, "edit", Sizes(32))


def train(*args) -> int:
    return cli(["train", *map(str, args)])


def test_each_task_trains_a_few_steps_from_folders_and_shards(tmp_path):
    fast = ["--steps", "2", "--batch", "2", "--warmup", "1", "--planner", PLANNER]
    clips_tar, images = export(tmp_path, "t2v", "tar"), tmp_path / "images"
    assert cli(["export-dataset", "--task", "t2i", "--n", "4", "--out", str(images)]) == 0
    assert train("video", "--stage", "global-continue", "--base", WAN, "--data", clips_tar, "--image-data", images,
                 "--image-share", "0.5", "--cache-dir", tmp_path / "cache", "--out", tmp_path / "v", *fast) == 0
    assert train("edit", "--stage", "global-continue", "--base", ASSETS / "flux_edit", "--data",
                 export(tmp_path, "edit", "tar"), "--out", tmp_path / "e", *fast) == 0
    assert train("video-context", "--stage", "metacanvas", "--base", WAN, "--base-connector",
                 ASSETS / "global_t2v.safetensors", "--data", export(tmp_path, "video-edit", "folder"),
                 "--reference-data", export(tmp_path, "in-context", "tar"), "--out", tmp_path / "c", *fast) == 0
    log = [json.loads(line) for line in (tmp_path / "v" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["skipped"] == 0


def test_data_flags_are_checked_up_front(tmp_path, capsys):
    base = ["--planner", PLANNER, "--out", tmp_path / "x", "--steps", "1"]
    with pytest.raises(SystemExit):
        train("video", "--stage", "global-continue", "--base", WAN, "--resolution", "64", *base)
    assert "give --data for other --resolution" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train("video", "--stage", "global-continue", "--base", WAN, "--data", tmp_path, "--frames", "16", *base)
    assert "--frames must be 4k+1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train("video-context", "--stage", "metacanvas", "--base", WAN, "--base-connector",
              ASSETS / "global_t2v.safetensors", "--data", tmp_path, *base)
    assert "give --in-context-share 0" in capsys.readouterr().err
