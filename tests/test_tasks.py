"""The task registry: one definition per task, consistent with the nodes, the command line and the trainer that read
it, and the one place that picks a task, checks its weights and builds its inputs."""

from __future__ import annotations

import pytest
import torch

from editor_graph import load_pack
from metacanvas_core.__main__ import main
from metacanvas_core.checkpoints import MetaCanvasWeights
from metacanvas_core.errors import MetaCanvasError
from metacanvas_core.tasks import TASKS, node_task, task, task_of_weights
from metacanvas_core.training.cli import TASKS as TRAINING_TASKS

pack = load_pack()


def _weights(recipe: dict) -> MetaCanvasWeights:
    """Weights whose recipe says `recipe` (nothing else is read by the task checks)."""
    return MetaCanvasWeights(connector=None, backbone_architecture="wan", name="w", recipe=recipe)


def test_the_six_tasks_and_what_reads_them_agree():
    assert list(TASKS) == ["t2i", "t2v", "i2v", "edit", "video-edit", "in-context"]
    nodes = {name: pack.NODE_CLASS_MAPPINGS[key] for key, name in pack.NODE_DISPLAY_NAME_MAPPINGS.items()}
    for t in TASKS.values():
        assert t.training_task in TRAINING_TASKS, t.name  # `train <it>` exists
        inputs = nodes[t.node].INPUT_TYPES()  # the node that samples it ...
        if t.given is not None:  # ... takes its input under that name, as an IMAGE
            assert inputs["optional"][t.given.node_input][0] == "IMAGE", t.name
        assert t.clip == (t.node == "Sample Video")
    # every node input that picks a task picks exactly one
    picked = [t.given.node_input for t in TASKS.values() if t.given is not None]
    assert sorted(picked) == sorted(set(picked))


def test_lookup_errors_list_the_tasks():
    with pytest.raises(MetaCanvasError, match="no task 't2x'; tasks: t2i, t2v, i2v, edit, video-edit, in-context"):
        task("t2x")


def test_the_weights_say_which_task_they_serve():
    assert task_of_weights(_weights({})).name == "t2i"  # weights that do not say: text-to-image
    assert task_of_weights(None).name == "t2i"
    assert task_of_weights(_weights({"task": "edit"})).name == "edit"
    assert task_of_weights(_weights({"task": "t2v", "serves": ["t2v", "i2v"]})).name == "t2v"
    assert task_of_weights(_weights({"task": "video-context", "serves": ["video-edit", "in-context"]})).name == \
        "video-edit"
    both = _weights({"task": "video-context", "serves": ["video-edit", "in-context"], "max_references": 2})
    assert task("in-context").check_weights(both) == 2 and task("video-edit").check_weights(both) == 2
    assert task("t2i").check_weights(_weights({})) is None
    with pytest.raises(MetaCanvasError, match=r"'w' were trained for task 'video-context' \(serving video-edit, "
                                              r"in-context\), not 'i2v' \(image-to-video\).*video editing: give its "
                                              r"source clip \(Sample Video's source_video, or --task video-edit "
                                              r"--video\)"):
        task("i2v").check_weights(both)
    with pytest.raises(MetaCanvasError, match="not 'edit'.*or use them for text-to-video \\(--task t2v\\)"):
        task("edit").check_weights(_weights({"task": "t2v"}))


def test_a_node_runs_the_task_whose_input_is_connected():
    image = torch.rand(1, 32, 32, 3)
    assert node_task("Sample Image", {"source_image": None})[0].name == "t2i"
    assert node_task("Sample Image", {"source_image": image}) == (task("edit"), image, "source_image")
    assert node_task("Sample Video", {})[0].name == "t2v"
    assert node_task("Sample Video", {"reference_images": image})[0].name == "in-context"
    with pytest.raises(MetaCanvasError, match="give one of start_image .*, not several"):
        node_task("Sample Video", {"start_image": image, "source_video": image})


def test_inputs_default_to_the_task_and_refuse_what_it_does_not_take(wan_pair, random_sana_dir):
    from metacanvas_core.backbones import load_backbone

    t2v, wide = wan_pair
    sana = load_backbone(random_sana_dir)
    none = task("t2i").inputs(sana)
    assert (none.width, none.height, none.frames, none.visuals, none.conditioning.given()) == (32, 32, 1, [], [])
    assert task("t2v").inputs(t2v).frames == 17
    with pytest.raises(MetaCanvasError, match="text-to-image takes nothing besides the prompt: remove --image"):
        task("t2i").inputs(sana, torch.rand(1, 32, 32, 3), where="--image")
    with pytest.raises(MetaCanvasError, match="image-to-video needs a start image"):
        task("i2v").inputs(t2v)
    with pytest.raises(MetaCanvasError, match="start_image: the sana backbone .* takes no start image "
                                              r"\(image-to-video\): remove it, or load a Wan 2.2 diffusers folder"):
        task("i2v").inputs(sana, torch.rand(1, 32, 32, 3), where="start_image")
    clip = torch.rand(9, 32, 32, 3)
    edit = task("video-edit").inputs(wide, clip)  # the clip's own size
    assert (edit.width, edit.height, edit.frames) == (32, 32, 9)
    with pytest.raises(MetaCanvasError, match="64x32x9 differ from the source clip's 32x32x9: video editing keeps"):
        task("video-edit").inputs(wide, clip, width=64)


def test_the_command_line_lists_every_task_with_its_backbone_and_input(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for t in TASKS.values():
        assert f"{t.name}: {t.title} on {t.backbone}" in text


def test_train_says_which_tasks_each_trainer_task_makes_weights_for(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(the weights of --task t2v, i2v)" in text and "(the weights of --task video-edit, in-context)" in text
