"""A --resume with other model flags is refused before any model loads, naming each flag with its old and new value
(run.json keeps the flags the run started with)."""

import json

from metacanvas_core.__main__ import main as cli
from metacanvas_core.builtin import PLANNER, SANA_T2I


def test_a_resume_with_other_lora_rank_and_canvas_grid_names_both(tmp_path, capsys):
    run = ["train", "t2i", "--stage", "metacanvas", "--planner", str(PLANNER), "--base", str(SANA_T2I),
           "--out", str(tmp_path), "--steps", "1", "--batch", "2", "--save-every", "1"]
    assert cli([*run, "--dit-lora-rank", "2"]) == 0
    flags = json.loads((tmp_path / "run.json").read_text())["flags"]
    assert flags["dit_lora_rank"] == "2" and flags["canvas_grid"] == "None"
    assert cli([*run, "--steps", "2", "--resume", "--dit-lora-rank", "4", "--canvas-grid", "4x4"]) == 2
    err = capsys.readouterr().err
    assert "--dit-lora-rank 2 (now 4)" in err and "--canvas-grid None (now (4, 4))" in err
    assert cli([*run, "--steps", "2", "--resume", "--dit-lora-rank", "2"]) == 0  # same model flags, longer run
