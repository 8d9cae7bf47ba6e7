"""MetaCanvas weights: safetensors + JSON metadata round trip, and clear errors for the wrong pairing."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from metacanvas_core.backbones import load_backbone
from metacanvas_core.checkpoints import load_connector, read_metadata, save_connector
from metacanvas_core.connectors import ConnectorConfig, MetaCanvasConnector
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.planner import Planner
from metacanvas_core.sampling import InjectedBackbone
from metacanvas_core.world.tiny_models import new_dit, new_scheduler, new_vae, save_sana_pipeline_folder


@pytest.fixture()
def backbone(random_sana_dir):
    return load_backbone(random_sana_dir)


def _connector(bb, planner_hidden=128, use_canvas=True):
    torch.manual_seed(3)
    conn = MetaCanvasConnector(ConnectorConfig(planner_hidden, bb.dit_dim, bb.caption_channels, [1, 8, 8], use_canvas=use_canvas))
    torch.nn.init.normal_(conn.canvas_fuser.proj.weight) if use_canvas else None
    return conn


def test_round_trip_keeps_every_tensor_and_the_metadata(tmp_path, backbone):
    conn = _connector(backbone)
    dit = {k: v + 1 for k, v in backbone.transformer.state_dict().items()}
    path = tmp_path / "mc.safetensors"
    written = save_connector(path, conn, backbone, dit_state=dit, recipe={"steps": 7})
    meta = read_metadata(path)
    assert meta["format"] == "metacanvas" and meta["backbone_architecture"] == "sana"
    assert json.loads(meta["canvas_grid"]) == [1, 8, 8] and meta["planner_hidden_size"] == "128"
    # The file holds the connector only; the fine-tuned DiT is a transformer folder beside it.
    assert written == [path, tmp_path / "mc_dit"] and not any(k.startswith("transformer.") for k in load_file(path))
    loaded = load_connector(path)
    for k, v in conn.state_dict().items():
        assert torch.equal(loaded.connector.state_dict()[k], v)
    assert loaded.dit.kind == "transformer" and not loaded.dit_state
    dit_module = loaded.dit_module(backbone.transformer)
    assert type(dit_module) is type(backbone.transformer)
    assert all(torch.equal(dit_module.state_dict()[k], v) for k, v in dit.items())
    assert loaded.dit_module(backbone.transformer) is dit_module  # loaded once
    assert loaded.recipe == {"steps": 7} and loaded.method == "metacanvas"
    loaded.check_backbone(backbone)


def test_a_missing_dit_part_is_a_clear_error(tmp_path, backbone):
    import shutil

    path = tmp_path / "mc.safetensors"
    save_connector(path, _connector(backbone), backbone, dit_state=backbone.transformer.state_dict())
    shutil.rmtree(tmp_path / "mc_dit")
    with pytest.raises(MetaCanvasError, match="fine-tuned DiT folder 'mc_dit' is missing beside it"):
        load_connector(path)


def test_format_1_weights_with_the_dit_inside_still_load(tmp_path, backbone):
    """Format 1 files carried the DiT's tensors inside (`transformer.*`): they load, as an inline DiT part."""
    conn, dit = _connector(backbone), {k: v + 1 for k, v in backbone.transformer.state_dict().items()}
    path = tmp_path / "old.safetensors"
    save_connector(path, conn, backbone)
    meta = read_metadata(path)
    del meta["dit"]
    tensors = {**load_file(path), **{f"transformer.{k}": v for k, v in dit.items()}}
    save_file(tensors, str(path), metadata={**meta, "format_version": "1"})
    loaded = load_connector(path)
    assert loaded.dit.kind == "inline" and all(torch.equal(loaded.dit_state[k], v) for k, v in dit.items())


def test_global_checkpoint_has_no_canvas(tmp_path, backbone):
    path = tmp_path / "g.safetensors"
    save_connector(path, _connector(backbone, use_canvas=False), backbone)
    loaded = load_connector(path)
    assert loaded.method == "global" and not hasattr(loaded.connector, "canvas_tokens")


def test_wrong_backbone_width_and_architecture_are_named(tmp_path, backbone, monkeypatch):
    path = tmp_path / "mc.safetensors"
    save_connector(path, _connector(backbone), backbone)
    loaded = load_connector(path)
    monkeypatch.setattr(type(backbone), "architecture", "wan")
    with pytest.raises(MetaCanvasError, match="trained for a sana backbone.*is wan"):
        InjectedBackbone(backbone).inject(loaded)


def test_other_dit_config_is_named(tmp_path, backbone):
    other = tmp_path / "posemb"
    save_sana_pipeline_folder(other, new_dit(interpolation_scale=1.0), new_vae(), new_scheduler())
    path = tmp_path / "mc.safetensors"
    save_connector(path, _connector(backbone), backbone)
    with pytest.raises(MetaCanvasError, match="interpolation_scale"):
        InjectedBackbone(load_backbone(other)).inject(load_connector(path))


def test_wrong_planner_is_named(tmp_path, backbone, random_planner_dir):
    path = tmp_path / "mc.safetensors"
    save_connector(path, _connector(backbone, planner_hidden=96), backbone)
    with pytest.raises(MetaCanvasError, match="hidden size 96.*has 128"):
        load_connector(path).check_planner(Planner.from_pretrained(random_planner_dir))


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(MetaCanvasError, match="not found"):
        load_connector(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(MetaCanvasError, match="not a readable safetensors"):
        load_connector(junk)
    lora = tmp_path / "lora.safetensors"
    save_file({"w": torch.zeros(2)}, str(lora))
    with pytest.raises(MetaCanvasError, match="not MetaCanvas weights"):
        load_connector(lora)


def test_corrupted_weights_give_clear_errors(tmp_path, random_sana_dir, random_planner_dir):
    import shutil

    for src, weights, load in (
        (random_sana_dir, "transformer/diffusion_pytorch_model.safetensors", load_backbone),
        (random_planner_dir, "model.safetensors", Planner.from_pretrained),
    ):
        broken = tmp_path / src.name
        shutil.copytree(src, broken)
        (broken / weights).write_bytes((src / weights).read_bytes()[:1000])
        with pytest.raises(MetaCanvasError, match="re-download"):
            load(broken)


def test_missing_folders_give_clear_errors(tmp_path):
    with pytest.raises(MetaCanvasError, match="no model_index.json"):
        load_backbone(tmp_path)
    with pytest.raises(MetaCanvasError, match="no config.json"):
        Planner.from_pretrained(tmp_path)


def _rewrite(src, dst, meta_change=None, tensor_change=None):
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(src))
    for k, v in (meta_change or {}).items():
        meta.pop(k) if v is None else meta.__setitem__(k, v)
    save_file((tensor_change or (lambda t: t))(tensors), str(dst), metadata=meta)
    return dst


def _config_with(key, value):
    cfg = ConnectorConfig(128, 64, 64, [1, 8, 8]).to_dict()
    return json.dumps({**cfg, key: value})


MALFORMED = {
    "format_version abc": ({"format_version": "abc"}, "format_version 'abc' is not a positive whole number"),
    "no format_version": ({"format_version": None}, "format_version is missing"),
    "no connector_config": ({"connector_config": None}, "no connector_config"),
    "no backbone_architecture": ({"backbone_architecture": None}, "no backbone_architecture"),
    "connector_config not JSON": ({"connector_config": "{planner"}, "connector_config is not valid JSON"),
    "connector_config a list": ({"connector_config": "[1, 2]"}, "connector_config is a JSON list, not a dict"),
    "unknown key": ({"connector_config": _config_with("colour", 3)}, "unknown keys ['colour']"),
    "shape mismatch": ({"connector_config": _config_with("caption_channels", 48)}, "tensor shapes do not match"),
    "recipe not JSON": ({"training_recipe": "nope"}, "training_recipe is not valid JSON"),
    "bad trained_sizes": ({"trained_sizes": "[[32]]"}, "trained_sizes must be a list of [width, height]"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_metadata_is_refused_with_one_message(tmp_path, backbone, case):
    """Issue 15, point 3: each of these gave a raw KeyError / ValueError / JSON / size-mismatch error."""
    good = tmp_path / "good.safetensors"
    save_connector(good, _connector(backbone), backbone)
    change, what = MALFORMED[case]
    bad = _rewrite(good, tmp_path / "bad.safetensors", change)
    with pytest.raises(MetaCanvasError, match=r"^'bad.safetensors': this file is not valid MetaCanvas weights: .*"
                       + re.escape(what) + r".*; re-download or re-train it$"):
        load_connector(bad)


def test_missing_or_extra_tensors_are_refused(tmp_path, backbone):
    good = tmp_path / "good.safetensors"
    save_connector(good, _connector(backbone), backbone)
    for name, change in (("missing", lambda t: {k: v for k, v in t.items() if k != "canvas_tokens"}),
                         ("extra", lambda t: {**t, "stray": torch.zeros(1)})):
        bad = _rewrite(good, tmp_path / f"{name}.safetensors", tensor_change=change)
        with pytest.raises(MetaCanvasError, match="not valid MetaCanvas weights: its tensors do not match"):
            load_connector(bad)


def test_dit_tensors_of_other_shapes_are_named_at_inject(tmp_path, backbone):
    dit = {k: v for k, v in backbone.transformer.state_dict().items()}
    key = next(iter(dit))
    path = tmp_path / "mc.safetensors"
    save_connector(path, _connector(backbone), backbone, dit_state={key: torch.zeros(3, 3)})
    with pytest.raises(MetaCanvasError, match=re.escape(f"tensor {key}: trained with (3, 3)")):
        InjectedBackbone(backbone).inject(load_connector(path))


def test_trained_sizes_round_trip_and_old_files_have_none(tmp_path, backbone):
    path = tmp_path / "mc.safetensors"
    save_connector(path, _connector(backbone), backbone, trained_sizes=[(32, 32), [64, 32]])
    assert json.loads(read_metadata(path)["trained_sizes"]) == [[32, 32], [64, 32]]
    assert load_connector(path).trained_sizes == [[32, 32], [64, 32]]
    save_connector(path, _connector(backbone), backbone)
    assert "trained_sizes" not in read_metadata(path) and load_connector(path).trained_sizes == []
    with pytest.raises(MetaCanvasError, match="trained_sizes must be"):
        save_connector(path, _connector(backbone), backbone, trained_sizes=[[32, 0]])


def test_shipped_weights_record_their_training_size():
    from metacanvas_core.builtin import builtin_connectors
    from metacanvas_core.world import clips
    from metacanvas_core.world.tiny_flux import EDIT_IMAGE_SIZE
    from metacanvas_core.world.tiny_models import IMAGE_SIZE

    clip = [[clips.SIZE, clips.SIZE, clips.FRAMES]]
    sizes = {"t2i": [[IMAGE_SIZE, IMAGE_SIZE]], "edit": [[EDIT_IMAGE_SIZE, EDIT_IMAGE_SIZE]], "t2v": clip,
             "video-context": clip}
    for path in builtin_connectors().values():
        w = load_connector(path)
        assert w.trained_sizes == sizes[w.recipe.get("task", "t2i")]


def test_backbone_loader_reads_safetensors_only(tmp_path, backbone, random_sana_dir):
    """Issue 15, point 7: a folder with diffusion_pytorch_model.bin loaded through pickle, with only a log line."""
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(random_sana_dir, folder)
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    torch.save(backbone.transformer.state_dict(), weights.with_suffix(".bin"))
    weights.unlink()
    with pytest.raises(MetaCanvasError, match=r"transformer/ holds only pickle weights \(diffusion_pytorch_model.bin\)"
                       r".*safetensors only"):
        load_backbone(folder)
    from metacanvas_core.backbones import ADAPTERS

    # the adapter itself refuses pickle too (no silent fallback when both kinds or variants are present)
    with pytest.raises(OSError, match="safetensors"):
        ADAPTERS["SanaTransformer2DModel"].from_folder(folder, torch.float32, "cpu")


def test_shipped_format_1_weights_convert_and_sample_identically(tmp_path):
    """`convert_to_current` turns weights with the DiT inside into the connector file + DiT folder: the same
    connector, the same DiT, so the same picture bit for bit."""
    from metacanvas_core.builtin import ASSETS, PLANNER
    from metacanvas_core.checkpoints import convert_to_current
    from metacanvas_core.pipeline import MetaCanvasPipeline

    old = tmp_path / "old.safetensors"
    bb = load_backbone(ASSETS / "sana_t2i")
    conn = load_connector(ASSETS / "metacanvas_t2i.safetensors")
    tensors = {**load_file(ASSETS / "metacanvas_t2i.safetensors")}
    meta = read_metadata(ASSETS / "metacanvas_t2i.safetensors")
    if conn.dit.kind != "inline":  # once the shipped file is converted, rebuild its format 1 form to convert
        dit = conn.dit_module(bb.transformer).state_dict()
        tensors.update({f"transformer.{k}": v.half() for k, v in dit.items()})
        meta = {k: v for k, v in meta.items() if k != "dit"}
    save_file(tensors, str(old), metadata={**meta, "format_version": "1"})
    new = tmp_path / "new.safetensors"
    written = convert_to_current(old, bb, new)
    assert written == [new, tmp_path / "new_dit"] and load_connector(new).dit.kind == "transformer"
    assert all(v.dtype == torch.float16 for v in load_file(tmp_path / "new_dit" / "diffusion_pytorch_model.safetensors")
               .values())
    images = [MetaCanvasPipeline.from_pretrained(PLANNER, ASSETS / "sana_t2i", w)(
        "a red circle at top left and a blue square at bottom right", steps=4, seed=3).images for w in (old, new)]
    assert torch.equal(*images)
    with pytest.raises(MetaCanvasError, match="already in format 2"):
        convert_to_current(new, bb)


def test_the_weights_list_never_shows_a_dit_part(tmp_path, monkeypatch, backbone):
    """A DiT folder or LoRA file beside weights in models/metacanvas goes with them; it is no entry of its own."""
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from editor_graph import PACK_NAME, load_pack

    load_pack()
    comfy = importlib.import_module(f"{PACK_NAME}.nodes.comfy")
    save_connector(tmp_path / "full.safetensors", _connector(backbone), backbone,
                   dit_state=backbone.transformer.state_dict())
    save_connector(tmp_path / "lora.safetensors", _connector(backbone), backbone,
                   dit_lora={"transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 64)})
    monkeypatch.setattr(comfy, "_search_paths", lambda name: [str(tmp_path)] if name == "metacanvas" else [])
    mine = {k for k in comfy.connector_choices() if not k.startswith("built-in")}
    assert mine == {"full.safetensors", "lora.safetensors"}


class _Bomb:
    """Unpickling this writes a file: proof that a pickle was opened."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".bin", ".pth", ".PT"])
def test_pickle_weights_are_refused_with_how_to_convert_and_never_opened(tmp_path, suffix):
    """Issue 27, point 3: only .safetensors are loaded; the message says why and how to convert."""
    marker = tmp_path / "opened"
    path = tmp_path / f"evil{suffix}"
    torch.save({"x": _Bomb(marker)}, path)
    for read in (read_metadata, load_connector):
        with pytest.raises(MetaCanvasError, match=rf"evil{re.escape(suffix)}'.*only \.safetensors files are loaded, "
                                                  r"never a pickle.*save_file\(torch\.load"):
            read(path)
    assert not marker.exists()
