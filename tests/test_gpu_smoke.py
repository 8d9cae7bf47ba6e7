"""scripts/gpu_smoke.sh on the CPU (DEVICE=cpu): the replicas of the real layouts build, every task trains two
steps in bf16 autocast with a DiT LoRA and gradient checkpointing and samples its validation prompt, and all six
generation tasks sample from the exported weights. About 40 s on a loaded 2-core machine; `-m "not slow"` skips
it."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT.parent / "shared" / "reference-configs"


@pytest.mark.slow
@pytest.mark.skipif(not REF.is_dir(), reason=f"reference configs not found at {REF}")
def test_gpu_smoke_script_runs_on_the_cpu(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "OUT": str(tmp_path), "STEPS": "2", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_smoke.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    rows = [json.loads(line) for line in (tmp_path / "record.jsonl").read_text().splitlines()]
    assert [r["label"].split(" (")[0] for r in rows] == [
        "train t2i", "train edit", "train video: t2v + i2v", "train video-context", "generate t2i", "generate edit",
        "generate t2v", "generate i2v", "generate video-edit", "generate in-context"]
    assert all(r["code"] == 0 and r["peak_gb"] > 0 for r in rows)
    assert all(r["step_s"] > 0 for r in rows[:4])
    assert "| train t2i (SANA) | 0 |" in done.stdout and "peak GB" in done.stdout
    # The replicas are the released classes at reduced depth (2 planner layers, 2 SANA blocks, 1 + 1 FLUX blocks).
    planner = json.loads((tmp_path / "planner" / "config.json").read_text())
    assert planner["model_type"] == "qwen2_5_vl" and planner["text_config"]["num_hidden_layers"] == 2
    flux = json.loads((tmp_path / "flux" / "transformer" / "config.json").read_text())
    assert flux["_class_name"] == "FluxTransformer2DModel" and (flux["num_layers"], flux["num_single_layers"]) == (1, 1)
    assert flux["guidance_embeds"] is True  # Kontext-dev's guidance embedding, as released
    for run, name in (("t2i", "metacanvas_t2i"), ("edit", "metacanvas_edit"), ("video", "metacanvas_t2v")):
        assert (tmp_path / "runs" / run / f"{name}_dit_lora.safetensors").is_file()  # trained as a LoRA
        assert (tmp_path / "runs" / run / "validation" / "step_2" / "00.png").is_file()
        flags = json.loads((tmp_path / "runs" / run / "run.json").read_text())["flags"]
        assert flags["gradient_checkpointing"] == "True" and flags["dit_lora_rank"] == "4"
    assert (tmp_path / "runs" / "video" / "validation" / "step_2" / "00.gif").is_file()
    for sample in ("t2i.png", "edit.png", "t2v.gif", "i2v.gif", "video_edit.gif", "in_context.gif"):
        assert (tmp_path / "samples" / sample).is_file()
    log = [json.loads(line) for line in (tmp_path / "runs" / "t2i" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2
