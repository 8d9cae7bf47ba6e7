"""Training data: the shapes world (drawn on the fly) or image-caption pairs from local files.

Two on-disk layouts, the ones users already have:
- an image folder with `metadata.jsonl` (one `{"file_name": ..., "text": ...}` per line), as Hugging Face
  datasets' `imagefolder` reads it;
- tar shards in the webdataset layout: `<key>.png|jpg|jpeg|webp` beside `<key>.txt` (or `<key>.json` with
  `text`/`caption`).

Read with plain `json`, `tarfile` and PIL: the trainer draws each sample of a global batch by its index (so N
processes see exactly what one would, and a resume repeats the draws), which needs random access. An index of the
tar members (their offsets) gives that without unpacking; webdataset's sequential shuffle buffers cannot, and
`datasets` would add pyarrow and a cache copy of every image for the same two layouts.

A broken sample (unreadable image, missing caption, image smaller than the training size) is passed over for the
next one in the epoch's order with a warning naming the file; under `strict` it stops the run instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.torch import load_file, save_file

from ..errors import MetaCanvasError
from ..world import shapes

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")


class BrokenSample(Exception):
    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file, self.reason = file, reason


@dataclass
class Example:
    image: np.ndarray  # float32 (3, H, W) in [-1, 1]
    caption: str
    category: str | None = None  # shapes-world caption category, if known
    key: str | None = None  # the sample's identity in its dataset (for the disk cache of its latents)


def to_model_pixels(img: Image.Image, resolution: int, name: str) -> np.ndarray:
    """Resize the shorter side to `resolution` and centre-crop, as diffusers' training examples do; never upscale."""
    img = img.convert("RGB")
    w, h = img.size
    if min(w, h) < resolution:
        raise BrokenSample(name, f"image is {w}x{h}, smaller than the training resolution {resolution}")
    if (w, h) != (resolution, resolution):
        s = resolution / min(w, h)
        img = img.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BICUBIC)
        left, top = (img.width - resolution) // 2, (img.height - resolution) // 2
        img = img.crop((left, top, left + resolution, top + resolution))
    return shapes.model_pixels(np.asarray(img)[None])[0]


def _open_image(data: bytes, name: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except Exception as e:  # PIL raises many types for bad files
        raise BrokenSample(name, f"unreadable image ({type(e).__name__}: {e})") from e


def _caption(text, name: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise BrokenSample(name, "missing or empty caption")
    return text.strip()


class ImageFolder:
    """`root/metadata.jsonl` + the images it names."""

    def __init__(self, root: Path, resolution: int) -> None:
        meta = root / "metadata.jsonl"
        if not meta.is_file():
            raise MetaCanvasError(f"--data {str(root)!r} has no metadata.jsonl: write one line "
                                  '{"file_name": "0001.png", "text": "a caption"} per image (see export-dataset)')
        self.root, self.resolution = root, resolution
        self.rows = [line for line in meta.read_text().splitlines() if line.strip()]
        if not self.rows:
            raise MetaCanvasError(f"{meta} lists no images")

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, i: int) -> Example:
        where = f"{self.root / 'metadata.jsonl'} line {i + 1}"
        try:
            row = json.loads(self.rows[i])
            name = row["file_name"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise BrokenSample(where, f"not a JSON object with a file_name ({e})") from e
        path = self.root / name
        try:
            data = path.read_bytes()
        except OSError as e:
            raise BrokenSample(str(path), f"cannot read ({e.strerror})") from e
        caption = _caption(row.get("text"), f"{path} ({where})")
        return Example(to_model_pixels(_open_image(data, str(path)), self.resolution, str(path)), caption,
                       row.get("category"))


class TarShards:
    """webdataset-layout shards, indexed by member offset for random access (nothing is unpacked)."""

    def __init__(self, paths: list[Path], resolution: int) -> None:
        self.resolution, self.entries, self._open = resolution, [], {}
        for path in paths:
            groups: dict[str, dict[str, tarfile.TarInfo]] = {}
            with tarfile.open(path, "r:") as tar:
                for m in tar:
                    if m.isfile():
                        base = m.name.rsplit("/", 1)[-1]
                        key, _, ext = base.partition(".")
                        groups.setdefault(m.name[: len(m.name) - len(base)] + key, {})["." + ext.lower()] = m
            self.entries += [(path, key, members) for key, members in groups.items()]
        if not self.entries:
            raise MetaCanvasError(f"--data: no samples in {', '.join(map(str, paths))}")

    def __len__(self) -> int:
        return len(self.entries)

    def _read(self, path: Path, member: tarfile.TarInfo) -> bytes:
        if path not in self._open:
            self._open[path] = tarfile.open(path, "r:")
        return self._open[path].extractfile(member).read()

    def load(self, i: int) -> Example:
        path, key, members = self.entries[i]
        name = f"{path}:{key}"
        image = next((m for ext, m in members.items() if ext in IMAGE_EXTS), None)
        if image is None:
            raise BrokenSample(name, f"no image member ({', '.join(IMAGE_EXTS)})")
        if ".txt" in members:
            caption = self._read(path, members[".txt"]).decode("utf-8", "replace")
            category = None
        elif ".json" in members:
            try:
                meta = json.loads(self._read(path, members[".json"]))
            except json.JSONDecodeError as e:
                raise BrokenSample(name, f"unreadable .json ({e})") from e
            caption, category = meta.get("text", meta.get("caption")), meta.get("category")
        else:
            raise BrokenSample(name, "missing caption (.txt or .json)")
        pixels = to_model_pixels(_open_image(self._read(path, image), f"{path}:{image.name}"), self.resolution,
                                 f"{path}:{image.name}")
        return Example(pixels, _caption(caption, name), category)


def open_dataset(data: Path, resolution: int) -> ImageFolder | TarShards:
    if data.is_dir() and (data / "metadata.jsonl").is_file():
        return ImageFolder(data, resolution)
    shards = sorted(data.glob("*.tar")) if data.is_dir() else [data] if data.suffix == ".tar" else []
    if not shards:
        raise MetaCanvasError(f"--data {str(data)!r} is neither an image folder with metadata.jsonl nor .tar shards "
                              "(a .tar file or a folder of them)")
    return TarShards(shards, resolution)


class DataStream:
    """Epochs over a dataset in a seeded order; position `g` of the stream (step x global batch + index) always
    names the same sample, whichever process asks. Broken samples are passed over (or stop the run)."""

    def __init__(self, dataset: ImageFolder | TarShards, seed: int, strict: bool) -> None:
        self.dataset, self.seed, self.strict, self._warned, self._orders = dataset, seed, strict, set(), {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))}
        return self._orders[epoch]

    def __getitem__(self, g: int) -> tuple[Example, list[str]]:
        n, skipped = len(self.dataset), []
        for j in range(n):
            epoch, pos = divmod(g + j, n)
            item = int(self._order(epoch)[pos])
            try:
                ex = self.dataset.load(item)
                ex.key = str(item)
                return ex, skipped
            except BrokenSample as e:
                if self.strict:
                    raise MetaCanvasError(f"broken training sample {e.file}: {e.reason} (--strict; fix or remove "
                                          "it, or drop --strict to skip broken samples with a warning)") from e
                if e.file not in self._warned:
                    self._warned.add(e.file)
                    print(f"warning: skipped broken sample {e.file}: {e.reason}", file=sys.stderr, flush=True)
                skipped.append(e.file)
        raise MetaCanvasError(f"--data: every one of the {n} samples is broken (see the warnings above)")


class DiskCache:
    """Tensors computed once from frozen models (VAE latents, planner text states) kept on disk as safetensors, so
    large runs pay the frozen encoders once per sample, not once per epoch. Keys name what the tensor depends on."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.safetensors"

    def get(self, key: str):
        path = self._path(key)
        return load_file(str(path))["x"] if path.is_file() else None

    def put(self, key: str, tensor) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # processes may write the same key: rename is atomic
        save_file({"x": tensor.detach().float().cpu().contiguous()}, str(tmp))
        tmp.replace(path)


def export_shapes(out: Path, n: int, seed: int, resolution: int, fmt: str) -> Path:
    """Write `n` shapes-world samples as an image folder (`fmt` 'folder') or one tar shard ('tar')."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows, files = [], []
    for i in range(n):
        scene = shapes.sample_scene(rng)
        buf = io.BytesIO()
        Image.fromarray(shapes.render(scene.objects, resolution, rng)).save(buf, format="PNG")
        name = f"{i:06d}.png"
        rows.append({"file_name": name, "text": scene.caption, "category": scene.category})
        files.append((name, buf.getvalue()))
    if fmt == "folder":
        for name, data in files:
            (out / name).write_bytes(data)
        (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return out
    shard = out / "shard-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for (name, data), row in zip(files, rows):
            key = name.removesuffix(".png")
            meta = json.dumps({"text": row["text"], "category": row["category"]}).encode()
            for member, payload in ((name, data), (key + ".json", meta)):
                info = tarfile.TarInfo(member)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return shard
