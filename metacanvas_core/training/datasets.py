"""Users' data for every task beyond text-to-image, in the layouts people already use, read by sample index.

Two layouts, as for images (data.py):
- a folder with `metadata.jsonl`, one JSON object per line whose file fields name files beside it (a clip may be a
  video file or a folder of frame images);
- webdataset tar shards: the members of one sample share a key, `<key>.json` holds its fields (or `<key>.txt` its
  text) and each file field is the member `<key>.<field>.<ext>` (`<key>.<ext>` for `file_name`, references
  `<key>.ref0.<ext>`, `<key>.ref1.<ext>`, ...).

What each task reads (its `--data`; `export-dataset --task ...` writes the built-in worlds in these layouts):

| task | fields |
|---|---|
| t2i (also the images of `train video --image-data`) | `file_name` (the image), `text` |
| t2v, i2v | `file_name` (the clip), `text` |
| edit | `source`, `target` (images), `instruction` |
| video-edit | `source`, `target` (clips), `instruction` |
| in-context | `references` (a list of images), `file_name` (the clip), `text` |

Clips are resampled to the run's --fps and --frames and images and clips resized and centre-cropped to --resolution
(media.py); reference images stay at their own size, to be fitted to the clip as sampling fits them (video_tasks). A broken sample (unreadable file, missing field, too small, too short) is passed over for the next one
and counted, as for images (`DataStream`).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import MetaCanvasError
from .data import IMAGE_EXTS, BrokenSample
from .media import VIDEO_EXTS, decode_clip, decode_frame_folder, decode_image, encode_clip

class Layout(NamedTuple):
    files: tuple[str, ...]  # the file fields
    clips: tuple[str, ...]  # which of them are clips
    text: str  # the text field
    # The fields the task is given rather than asked to make: an all-black one is a failed export, skipped as broken
    # (sampling refuses it too), while an all-black target can be a true edit ("remove the only object").
    given: tuple[str, ...] = ()


LAYOUTS = {
    "t2i": Layout(("file_name",), (), "text"),
    "t2v": Layout(("file_name",), ("file_name",), "text"),
    "edit": Layout(("source", "target"), (), "instruction", given=("source",)),
    "video-edit": Layout(("source", "target"), ("source", "target"), "instruction", given=("source",)),
    "in-context": Layout(("references", "file_name"), ("file_name",), "text", given=("references",)),
}


@dataclass
class Record:
    """One sample of a dataset: its decoded media by field (uint8 (H, W, 3) images, (F, H, W, 3) clips, a list for
    `references`), its text, and its identity (the cache key of what frozen models compute from it)."""

    media: dict
    text: str
    key: str | None = None


@dataclass(frozen=True)
class Sizes:
    """What media decode to: square `resolution`, clips of `frames` at `fps`."""

    resolution: int
    frames: int = 1
    fps: float = 8.0


def _text(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BrokenSample(where, "missing or empty text")
    return value.strip()


class _Folder:
    def __init__(self, root: Path) -> None:
        meta = root / "metadata.jsonl"
        self.root = root
        self.rows = [line for line in meta.read_text().splitlines() if line.strip()]
        if not self.rows:
            raise MetaCanvasError(f"{meta} lists no samples")

    def __len__(self) -> int:
        return len(self.rows)

    def fields(self, i: int) -> tuple[dict, str]:
        where = f"{self.root / 'metadata.jsonl'} line {i + 1}"
        try:
            row = json.loads(self.rows[i])
        except json.JSONDecodeError as e:
            raise BrokenSample(where, f"not JSON ({e})") from e
        if not isinstance(row, dict):
            raise BrokenSample(where, "not a JSON object")
        return row, where

    def media(self, i: int, row: dict, field: str, clip: bool, sizes: Sizes, where: str):
        names = row.get(field)
        if field == "references":
            if not isinstance(names, list) or not names:
                raise BrokenSample(where, "references must be a non-empty list of image file names")
            return [self._one(n, False, sizes, where, own_size=True) for n in names]
        return self._one(names, clip, sizes, where)

    def _one(self, name, clip: bool, sizes: Sizes, where: str, own_size: bool = False):
        if not isinstance(name, str) or not name:
            raise BrokenSample(where, "a file field is missing or not a file name")
        path = self.root / name
        if clip and path.is_dir():
            return decode_frame_folder(path, sizes.resolution, sizes.frames)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise BrokenSample(str(path), f"cannot read ({e.strerror})") from e
        if clip:
            return decode_clip(data, str(path), sizes.resolution, sizes.frames, sizes.fps)
        return decode_image(data, str(path), None if own_size else sizes.resolution)


class _Shards:
    def __init__(self, paths: list[Path]) -> None:
        self.entries, self._open = [], {}
        for path in paths:
            groups: dict[str, dict[str, tarfile.TarInfo]] = {}
            with tarfile.open(path, "r:") as tar:
                for m in tar:
                    if m.isfile():
                        base = m.name.rsplit("/", 1)[-1]
                        key, _, ext = base.partition(".")
                        groups.setdefault(m.name[: len(m.name) - len(base)] + key, {})[ext.lower()] = m
            self.entries += [(path, key, members) for key, members in groups.items()]
        if not self.entries:
            raise MetaCanvasError(f"--data: no samples in {', '.join(map(str, paths))}")

    def __len__(self) -> int:
        return len(self.entries)

    def close(self) -> None:
        for tar in self._open.values():
            tar.close()
        self._open.clear()

    def _read(self, path: Path, member: tarfile.TarInfo) -> bytes:
        if path not in self._open:
            self._open[path] = tarfile.open(path, "r:")
        return self._open[path].extractfile(member).read()

    def fields(self, i: int) -> tuple[dict, str]:
        path, key, members = self.entries[i]
        where = f"{path}:{key}"
        if "json" in members:
            try:
                row = json.loads(self._read(path, members["json"]))
            except json.JSONDecodeError as e:
                raise BrokenSample(where, f"unreadable .json ({e})") from e
            if not isinstance(row, dict):
                raise BrokenSample(where, ".json is not a JSON object")
        elif "txt" in members:
            row = {"text": self._read(path, members["txt"]).decode("utf-8", "replace")}
        else:
            raise BrokenSample(where, "no .json or .txt member")
        return row, where

    def _member(self, i: int, prefix: str, clip: bool, where: str) -> tuple[bytes, str]:
        path, key, members = self.entries[i]
        exts = VIDEO_EXTS if clip else IMAGE_EXTS
        for e in exts:
            m = members.get(prefix + e[1:])
            if m is not None:
                return self._read(path, m), f"{path}:{m.name}"
        raise BrokenSample(where, f"no member {key}.{prefix}<{'|'.join(x[1:] for x in exts)}>")

    def media(self, i: int, row: dict, field: str, clip: bool, sizes: Sizes, where: str):
        if field == "references":
            n = sum(1 for ext in self.entries[i][2] if ext.startswith("ref") and ext[3:].split(".")[0].isdigit())
            if not n:
                raise BrokenSample(where, "no reference members (<key>.ref0.png, ...)")
            return [decode_image(*self._member(i, f"ref{r}.", False, where), None) for r in range(n)]
        data, name = self._member(i, "" if field == "file_name" else field + ".", clip, where)
        if clip:
            return decode_clip(data, name, sizes.resolution, sizes.frames, sizes.fps)
        return decode_image(data, name, sizes.resolution)


class TaskDataset:
    """A users' dataset for `task` (a key of LAYOUTS), loading records by index (as `DataStream` asks)."""

    def __init__(self, data: Path, task: str, sizes: Sizes) -> None:
        if task not in LAYOUTS:
            raise MetaCanvasError(f"no dataset layout for task {task!r}; one of {', '.join(LAYOUTS)}")
        self.task, self.sizes = task, sizes
        if data.is_dir() and (data / "metadata.jsonl").is_file():
            self.source = _Folder(data)
        else:
            shards = sorted(data.glob("*.tar")) if data.is_dir() else [data] if data.suffix == ".tar" else []
            if not shards:
                fields, text = LAYOUTS[task].files, LAYOUTS[task].text
                raise MetaCanvasError(
                    f"--data {str(data)!r} is neither a folder with metadata.jsonl nor .tar shards (a .tar file or a "
                    f"folder of them); a {task} sample has the fields {', '.join(fields)} and {text!r} (see "
                    f"`python -m metacanvas_core export-dataset --task {task}`)")
            self.source = _Shards(shards)

    def __len__(self) -> int:
        return len(self.source)

    def load(self, i: int) -> Record:
        fields, clips, text_field, given = LAYOUTS[self.task]
        row, where = self.source.fields(i)
        text = _text(row.get(text_field, row.get("caption") if text_field == "text" else None), where)
        media = {f: self.source.media(i, row, f, f in clips, self.sizes, where) for f in fields}
        for f in given:
            if any(not np.any(m) for m in (media[f] if f == "references" else [media[f]])):
                raise BrokenSample(where, f"{f} is all black (an empty or failed render): the task is given it")
        return Record(media, text)

    def close(self) -> None:
        if isinstance(self.source, _Shards):
            self.source.close()


def write_dataset(out: Path, task: str, samples: list[tuple[dict, str]], fmt: str, fps: float,
                  video_format: str = "mp4") -> Path:
    """Write (media by field, text) samples in `task`'s layout: a folder with metadata.jsonl (`fmt` "folder") or
    one tar shard ("tar"). Clips as `video_format` files (mp4, gif) or, for "frames", folders of PNG frames."""
    from PIL import Image

    fields, clips, text_field, _ = LAYOUTS[task]
    out.mkdir(parents=True, exist_ok=True)

    def png(img: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        return buf.getvalue()

    files: list[tuple[str, bytes]] = []  # (member or path, payload)
    rows = []
    for n, (media, text) in enumerate(samples):
        key, row = f"{n:06d}", {text_field: text}
        for field in fields:
            value = media[field]
            if field == "references":
                names = [f"{key}.ref{r}.png" for r in range(len(value))]
                files += [(name, png(img)) for name, img in zip(names, value)]
                row[field] = names
                continue
            stem = key if field == "file_name" else f"{key}.{field}"
            if field not in clips:
                name = f"{stem}.png"
                files.append((name, png(value)))
            elif video_format == "frames" and fmt == "folder":
                name = f"{stem}_frames"
                files += [(f"{name}/{f:04d}.png", png(frame)) for f, frame in enumerate(value)]
            else:
                name = f"{stem}.{'gif' if video_format == 'gif' else 'mp4'}"
                files.append((name, encode_clip(value, fps, "gif" if video_format == "gif" else "mp4")))
            row[field] = name
        rows.append((key, row))
    if fmt == "folder":
        for name, data in files:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
        (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for _, r in rows))
        return out
    shard = out / "shard-000000.tar"
    with tarfile.open(shard, "w") as tar:
        members = files + [(f"{key}.json", json.dumps({text_field: row[text_field]}).encode()) for key, row in rows]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return shard


def _clip_sample(rng: np.random.Generator) -> tuple[dict, str]:
    from ..world import clips

    scene = clips.sample_clip(rng)
    return {"file_name": clips.render_clip(scene, rng=rng)}, scene.caption


def _edit_sample(rng: np.random.Generator) -> tuple[dict, str]:
    from ..world.edits import render_pair, sample_edit

    edit = sample_edit(rng)
    source, target = render_pair(edit, 32, rng)
    return {"source": source, "target": target}, edit.instruction


def _clip_edit_sample(rng: np.random.Generator) -> tuple[dict, str]:
    from ..world.clip_edits import render_clip_edit, sample_clip_edit

    edit = sample_clip_edit(rng)
    source, target = render_clip_edit(edit, rng=rng)
    return {"source": source, "target": target}, edit.instruction


def _reference_sample(rng: np.random.Generator) -> tuple[dict, str]:
    from ..world import clips
    from ..world.clip_edits import render_references, sample_reference_scene

    ref = sample_reference_scene(rng)
    refs = render_references(ref, rng)
    return {"references": refs, "file_name": clips.render_clip(ref.scene, rng=rng)}, ref.prompt


# Each layout's built-in world: one training-split sample (media by field, text) drawn from an rng.
WORLD_SAMPLES = {"t2v": _clip_sample, "edit": _edit_sample, "video-edit": _clip_edit_sample,
                 "in-context": _reference_sample}


def world_samples(task: str, n: int, seed: int) -> list[tuple[dict, str]]:
    """`n` training-split samples of the built-in world of `task` as (media by field, text), in `LAYOUTS[task]`."""
    if task not in WORLD_SAMPLES:
        raise MetaCanvasError(f"no world samples for task {task!r}; layouts: {', '.join(WORLD_SAMPLES)}")
    rng = np.random.default_rng(seed)
    return [WORLD_SAMPLES[task](rng) for _ in range(n)]
