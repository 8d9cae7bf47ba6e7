"""`convert-weights`: format 1 weights (the DiT inside the file) become the connector file + the DiT folder, and
sample the same picture bit for bit."""

import torch
from safetensors.torch import load_file, save_file

from metacanvas_core.__main__ import main as cli
from metacanvas_core.backbones import load_backbone
from metacanvas_core.builtin import ASSETS, PLANNER
from metacanvas_core.checkpoints import load_connector, read_metadata


def _format_1(path, name: str, backbone):
    """The shipped weights `name` as format 1 would have held them: the DiT's tensors inside the file."""
    conn = load_connector(ASSETS / f"{name}.safetensors")
    tensors = dict(load_file(ASSETS / f"{name}.safetensors"))
    meta = read_metadata(ASSETS / f"{name}.safetensors")
    if conn.dit.kind != "inline":
        tensors.update({f"transformer.{k}": v.half()
                        for k, v in conn.dit_module(load_backbone(backbone).transformer).state_dict().items()})
        meta = {k: v for k, v in meta.items() if k != "dit"}
    save_file(tensors, str(path), metadata={**meta, "format_version": "1"})
    return path


def test_convert_weights_command_gives_identical_outputs(tmp_path, capsys):
    from metacanvas_core.pipeline import MetaCanvasPipeline

    old = _format_1(tmp_path / "old.safetensors", "metacanvas_t2i", ASSETS / "sana_t2i")
    inplace = _format_1(tmp_path / "inplace.safetensors", "metacanvas_t2i", ASSETS / "sana_t2i")
    assert load_connector(old).dit.kind == "inline"
    new = tmp_path / "new.safetensors"
    assert cli(["convert-weights", str(old), "--backbone", str(ASSETS / "sana_t2i"), "--out", str(new)]) == 0
    assert "new_dit" in capsys.readouterr().out
    assert cli(["convert-weights", str(inplace), "--backbone", str(ASSETS / "sana_t2i")]) == 0
    for w in (new, inplace):
        assert load_connector(w).dit.kind == "transformer" and (w.parent / f"{w.stem}_dit").is_dir()
        assert not any(k.startswith("transformer.") for k in load_file(w))  # the DiT left the file
    images = [MetaCanvasPipeline.from_pretrained(PLANNER, ASSETS / "sana_t2i", w)(
        "a red circle at top left and a blue square at bottom right", steps=4, seed=3).images
        for w in (old, new, inplace)]
    assert torch.equal(images[0], images[1]) and torch.equal(images[0], images[2])
    assert cli(["convert-weights", str(new), "--backbone", str(ASSETS / "sana_t2i")]) == 2
    assert "already in format 2" in capsys.readouterr().err


def test_convert_weights_without_a_backbone_names_what_to_give(tmp_path, capsys):
    old = _format_1(tmp_path / "old.safetensors", "metacanvas_t2i", ASSETS / "sana_t2i")
    base = load_connector(old).recipe.get("base")
    code = cli(["convert-weights", str(old)])
    if base and __import__("pathlib").Path(base).is_dir():  # the recipe's --base exists here: it is used
        assert code == 0
    else:
        assert code == 2 and "give --backbone FOLDER" in capsys.readouterr().err
