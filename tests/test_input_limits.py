"""Every input of every node and every value flag of the CLI, tried at its limits, just outside them, and with NaN,
infinity and empty values: each attempt runs or is refused with the pack's own error naming the node (CLI: a usage
error, exit 2), never another exception (issue 15: the systemic test, and points 4 and 6)."""

from __future__ import annotations

import importlib
import math
import re
import sys
import types
import warnings

import pytest

from editor_graph import PACK_NAME, load_pack

from metacanvas_core import __main__ as cli
from metacanvas_core.errors import MetaCanvasError, MetaCanvasWarning
from metacanvas_core.limits import BY_NAME, CFG, SEED, Limit

pack = load_pack()
comfy_glue = importlib.import_module(f"{PACK_NAME}.nodes.comfy")
NODES, NAMES = pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS
PROMPT = "a red circle at top left and a blue square at bottom right"
# Cheap values for the inputs not under test: one step on one token, no CFG doubling.
FAST = {"steps": 1, "width": 4, "height": 4, "cfg": 1.0, "batch_size": 1, "prompt": PROMPT}
EMPTY = ["", None, float("nan"), float("inf"), float("-inf")]


@pytest.fixture(scope="module")
def sockets():
    """One of each socket type, made by the nodes themselves (built once: loads are shared per process)."""
    def call(key, **kw):
        return getattr(NODES[key](), NODES[key].FUNCTION)(**kw)[0]

    planner = call("MetaCanvasPlannerLoader", planner="built-in tiny: planner", dtype="auto", device="auto")
    backbone = call("MetaCanvasBackboneLoader", backbone="built-in tiny: sana_t2i", dtype="auto", device="auto")
    connector = call("MetaCanvasConnectorLoader", weights="built-in tiny: metacanvas_t2i")
    plan = call("MetaCanvasPlan", planner=planner, connector=connector, prompt=PROMPT, canvas_only=False)
    injected = call("MetaCanvasInject", backbone=backbone, connector=connector, strength=1.0)
    wan = call("MetaCanvasBackboneLoader", backbone="built-in tiny: wan_t2v", dtype="auto", device="auto")
    t2v = call("MetaCanvasConnectorLoader", weights="built-in tiny: metacanvas_t2v")
    video_plan = call("MetaCanvasPlan", planner=planner, connector=t2v, prompt=PROMPT, canvas_only=False)
    video = {"METACANVAS_BACKBONE": call("MetaCanvasInject", backbone=wan, connector=t2v, strength=1.0),
             "METACANVAS_PLAN": video_plan}
    return {"METACANVAS_PLANNER": planner, "METACANVAS_CONNECTOR": connector, "METACANVAS_PLAN": plan,
            "METACANVAS_BACKBONE": injected, "video": video}


def _widgets(cls) -> dict[str, tuple]:
    spec = cls.INPUT_TYPES()
    return {n: s for section in ("required", "optional") for n, s in spec.get(section, {}).items()
            if isinstance(s[0], list) or s[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")}


def _tries(spec) -> list:
    """The values to try for one widget: its limits, just outside them, and NaN / inf / empty."""
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        return [kind[0], kind[-1], "not one of the choices", *EMPTY]
    if kind == "BOOLEAN":
        return [True, False, *EMPTY]
    if kind == "STRING":
        return [" ", "red " * 600, *EMPTY]
    lo, hi = opts.get("min"), opts.get("max")
    below = lo - 1 if kind == "INT" else lo - opts.get("step", 0.01)
    above = hi + 1 if kind == "INT" else hi + opts.get("step", 0.01)
    return [lo, hi, below, above, 2.5 if kind == "INT" else "3", *EMPTY]


# The native route's nodes take ComfyUI's own MODEL / CONDITIONING / VAE / LATENT, which exist only inside ComfyUI:
# their bad inputs are tried in a real ComfyUI (tests/test_native_comfyui.py, opt-in).
COMFY_TYPES = {"MODEL", "CONDITIONING", "VAE", "LATENT"}


def _pack_route(cls) -> bool:
    return not any(isinstance(s[0], str) and s[0] in COMFY_TYPES for section in ("required", "optional")
                   for s in cls.INPUT_TYPES().get(section, {}).values())


ATTEMPTS = [(key, name, value) for key in sorted(NODES) if _pack_route(NODES[key])
            for name, spec in _widgets(NODES[key]).items() for value in _tries(spec)]


@pytest.mark.parametrize(("key", "name", "value"), ATTEMPTS, ids=lambda v: repr(v)[:20])
def test_every_node_input_runs_or_is_refused_by_name(sockets, key, name, value):
    """Sample Image at steps=1000 is also the end-to-end check of point 1 (the folder's DPM-Solver++ raised
    IndexError after 501..1000 steps; tests/test_schedulers.py checks every count without the DiT). Sample Video
    runs on the tiny Wan. A refusal names only inputs the node has (issue 27, point 6: Sample Video's memory
    refusal named batch_size)."""
    cls = NODES[key]
    if cls.FUNCTION == "sample" and "frames" in cls.INPUT_TYPES()["required"]:
        sockets = {**sockets, **sockets["video"]}
    spec = cls.INPUT_TYPES()
    inputs = {}
    for section in ("required", "optional"):
        for n, s in spec.get(section, {}).items():
            opts = s[1] if len(s) > 1 else {}
            if isinstance(s[0], list):
                inputs[n] = opts.get("default", s[0][0])
            elif s[0] in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                inputs[n] = FAST.get(n, opts.get("default"))
            elif section == "required":
                inputs[n] = sockets[s[0]]
    inputs[name] = value
    node = NAMES[key]
    if hasattr(cls, "VALIDATE_INPUTS"):  # ComfyUI asks first; it must answer, never raise
        accepted = {n: v for n, v in inputs.items() if n in cls.VALIDATE_INPUTS.__func__.__code__.co_varnames}
        answer = cls.VALIDATE_INPUTS(**accepted)
        assert answer is True or (isinstance(answer, str) and answer.startswith(f"{node}: ")), answer
    try:
        out = getattr(cls(), cls.FUNCTION)(**inputs)
    except comfy_glue.NodeError as e:
        assert str(e).startswith(f"{node}: "), e
        own = {n for section in ("required", "optional") for n in spec.get(section, {})}
        named = {n for n in BY_NAME if re.search(rf"\b{n} \d", str(e))}  # e.g. "batch_size 1", "frames 9"
        assert named <= own, f"{e} names {sorted(named - own)}, which {node} does not have"
        if isinstance(value, float) and not math.isfinite(value) and name in BY_NAME:
            assert name in str(e), e  # NaN / inf is refused by the input's name
        return
    assert isinstance(out, tuple) and len(out) == len(cls.RETURN_TYPES)
    if name in BY_NAME:  # it ran: the value was within the limits
        BY_NAME[name].check(value)


def test_node_limits_are_the_library_limits():
    sample = NODES["MetaCanvasSampleImage"].INPUT_TYPES()["required"]
    for name, spec in sample.items():
        if name in BY_NAME:
            limit = BY_NAME[name]
            assert (spec[1]["min"], spec[1]["max"], spec[1]["default"]) == (limit.min, limit.max, limit.default)
    strength = NODES["MetaCanvasInject"].INPUT_TYPES()["required"]["strength"][1]
    assert (strength["min"], strength["max"]) == (BY_NAME["strength"].min, BY_NAME["strength"].max)


def test_nan_cfg_is_refused_before_sampling(sockets, monkeypatch):
    """Issue 15, point 4: the node sampled every step, then blamed the dtype."""
    from metacanvas_core.backbones.sana import SanaBackbone

    monkeypatch.setattr(SanaBackbone, "predict", lambda *a, **k: pytest.fail("sampled"))
    kw = dict(backbone=sockets["METACANVAS_BACKBONE"], positive=sockets["METACANVAS_PLAN"], seed=0, steps=2,
              width=32, height=32)
    for cfg in (float("nan"), float("inf"), -3.0):
        with pytest.raises(comfy_glue.NodeError, match=r"^Sample Image: cfg must be a finite number from 0 to 30"):
            NODES["MetaCanvasSampleImage"]().sample(cfg=cfg, **kw)
    with pytest.raises(comfy_glue.NodeError, match=r"^Inject into Backbone: strength must be a finite number"):
        NODES["MetaCanvasInject"]().inject(sockets["METACANVAS_BACKBONE"], sockets["METACANVAS_CONNECTOR"], math.nan)


@pytest.mark.parametrize("value", [0, 1.0, 2**64 - 1, 30.0])
def test_limit_accepts_its_range(value):
    limit = SEED if value != 30.0 else CFG
    assert limit.check(value) == value and type(limit.check(value)) is limit.kind


@pytest.mark.parametrize("value", [-1, 2**64, 0.5, math.nan, math.inf, "", None, True, "3"])
def test_limit_refuses_the_rest_by_name(value):
    with pytest.raises(MetaCanvasError, match=r"^seed must be a whole number from 0 to 18446744073709551615, got"):
        SEED.check(value)


def test_limit_parses_command_line_text():
    assert SEED.parse("18446744073709551615") == 2**64 - 1 and CFG.parse("4.5") == 4.5
    for text in ("nan", "inf", "-3", "1e3x", ""):
        with pytest.raises(MetaCanvasError, match="^cfg must be"):
            CFG.parse(text)
    with pytest.raises(MetaCanvasError, match="^steps must be a whole number from 1 to 1000, got '1e3'"):
        Limit("steps", int, 1, 1000, 20).parse("1e3")


# -- the command line -------------------------------------------------------------------------------------------

BASE = {"generate": ["--prompt", PROMPT, "--out", "OUT"], "evaluate": [], "bench": []}
COMMANDS = {command.__name__.rsplit(".", 1)[-1]: command for command in cli.COMMANDS}  # name -> its module


def _flags(command: str) -> dict[str, Limit]:
    """Every value flag of `command` with its limit, read from the parser the CLI builds."""
    found = {}
    original = cli.argparse.ArgumentParser.parse_args

    def capture(parser, argv=None, namespace=None):
        sub = parser._subparsers._group_actions[0].choices[command]
        for action in sub._actions:
            limit = getattr(action.type, "limit", None)
            if limit is not None:
                found[action.option_strings[0]] = limit
        raise SystemExit(0)

    cli.argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            cli.main([command])
    finally:
        cli.argparse.ArgumentParser.parse_args = original
    return found


@pytest.mark.parametrize("command", sorted(BASE))
def test_every_cli_value_flag_has_the_shared_limits(command):
    flags = _flags(command)
    expected = {"--steps", "--cfg"} | {"generate": {"--seed", "--width", "--height", "--upscale", "--strength",
                                                    "--shift", "--frames", "--fps"},
                                       "evaluate": {"--n", "--seeds", "--strength", "--shift"},
                                       "bench": {"--width", "--height", "--frames"}}[command]
    assert set(flags) == expected
    for flag, limit in flags.items():
        if flag[2:] in BY_NAME:
            assert limit is BY_NAME[flag[2:]]


def _cli_tries(limit: Limit) -> list[str]:
    below = limit.min - 1 if limit.kind is int else limit.min - 0.01
    above = limit.max + 1 if limit.kind is int else limit.max + 0.01
    bad = [str(below), str(above), "nan", "inf", "-inf", "", "abc"]
    return bad + (["2.5"] if limit.kind is int else [])


CLI_ATTEMPTS = [(c, f, v) for c in sorted(BASE) for f, limit in _flags(c).items() for v in _cli_tries(limit)]


@pytest.mark.parametrize(("command", "flag", "value"), CLI_ATTEMPTS)
def test_every_bad_cli_value_is_a_usage_error(command, flag, value, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(COMMANDS[command], "run", lambda args: pytest.fail("ran with a bad value"))
    argv = [command, *[str(tmp_path / "x.png") if a == "OUT" else a for a in BASE[command]], f"{flag}={value}"]
    with pytest.raises(SystemExit) as code:
        cli.main(argv)
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {flag}: " in err and "Traceback" not in err


@pytest.mark.parametrize("command", sorted(BASE))
def test_every_cli_value_flag_takes_its_limits(command, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(COMMANDS[command], "run", seen.append)
    base = [str(tmp_path / "x.png") if a == "OUT" else a for a in BASE[command]]
    for flag, limit in _flags(command).items():
        for value in (limit.min, limit.max):
            assert cli.main([command, *base, f"{flag}={value}"]) == 0
            got = getattr(seen[-1], flag[2:].replace("-", "_"))
            assert (got[0] if isinstance(got, list) else got) == value


def test_cli_generate_at_the_limits_and_the_issue_values(tmp_path, capsys):
    """Issue 15, points 4 and 6: --cfg nan/inf wrote a black PNG, --cfg -3 ran, --seed 2**64 was a traceback and
    --seed -1 drew the image of 2**64-1. Now the edges run, the rest are usage errors naming the flag."""
    out = tmp_path / "edge.png"
    argv = ["generate", "--prompt", PROMPT, "--out", str(out), "--steps", "1", "--width", "4", "--height", "4",
            "--seed", str(2**64 - 1), "--cfg", "0", "--strength", "2", "--sampler", "euler", "--shift", "0.01",
            "--upscale", "1"]
    assert cli.main(argv) == 0 and out.is_file()
    for flag, value in (("--cfg", "nan"), ("--cfg", "inf"), ("--cfg", "-3"), ("--seed", str(2**64)),
                        ("--seed", "-1")):
        with pytest.raises(SystemExit) as code:
            cli.main(["generate", "--prompt", PROMPT, "--out", str(tmp_path / "bad.png"), f"{flag}={value}"])
        assert code.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}: {flag[2:]} must be" in err and "Traceback" not in err
    assert not (tmp_path / "bad.png").exists()


PATH_AND_TEXT_TRIES = [
    ("--device", ""), ("--device", "nonsense"), ("--device", "cuda:99"), ("--out", ""), ("--out", "picture"),
    ("--canvas-preview", "DIR"), ("--planner", ""), ("--planner", "/nonexistent"), ("--backbone", "/nonexistent"),
    ("--weights", "/nonexistent.safetensors"), ("--weights", ""), ("--prompt", ""), ("--prompt", "a zebra"),
    ("--negative-prompt", "red " * 600), ("--method", ""), ("--sampler", "heun"),
]


@pytest.mark.parametrize(("flag", "value"), PATH_AND_TEXT_TRIES)
def test_bad_text_and_path_flags_are_errors_not_tracebacks(flag, value, tmp_path, capsys):
    value = str(tmp_path) if value == "DIR" else value
    argv = ["generate", "--prompt", PROMPT, "--out", str(tmp_path / "x.png"), "--steps", "1", f"{flag}={value}"]
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's usage error
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "error: " in err and "Traceback" not in err, err
    assert not (tmp_path / "x.png").exists()


def test_cli_refuses_a_size_that_cannot_fit(tmp_path, capsys, monkeypatch):
    from metacanvas_core import memory

    monkeypatch.setattr(memory, "free_bytes", lambda device: 8 * 2**30)
    code = cli.main(["generate", "--prompt", PROMPT, "--out", str(tmp_path / "big.png"), "--width", "8192",
                     "--height", "8192", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "\nerror: width 8192, height 8192, batch_size 1 need about" in "\n" + err
    assert "use width" in err and not (tmp_path / "big.png").exists()


def test_cli_output_that_cannot_be_written_is_an_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "dir.png").mkdir()
    code = cli.main(["generate", "--prompt", PROMPT, "--out", str(tmp_path / "dir.png"), "--steps", "1"])
    assert code == 1 and "\nerror: " in "\n" + capsys.readouterr().err


# -- sizes the weights were not trained for: a warning, not an error (point 8) ----------------------------------


def test_far_sizes_warn_near_ones_do_not(sockets):
    connector = sockets["METACANVAS_CONNECTOR"]
    assert connector.trained_sizes == [[32, 32]]
    for w, h in ((128, 128), (32, 64), (8, 8)):
        with pytest.warns(MetaCanvasWarning, match=rf"trained at 32x32 .* {w}x{h} is far from that"):
            connector.warn_if_untrained(w, h)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MetaCanvasWarning)
        for w, h in ((32, 32), (40, 32), (32, 44), (36, 36)):
            connector.warn_if_untrained(w, h)
        old = type(connector)(connector.connector, "sana", "old")  # a file without trained_sizes
        old.warn_if_untrained(128, 128)


def test_cli_prints_the_warning_and_still_writes(tmp_path, capsys):
    out = tmp_path / "wide.png"
    assert cli.main(["generate", "--prompt", PROMPT, "--out", str(out), "--width", "64", "--height", "32",
                     "--steps", "1"]) == 0
    err = capsys.readouterr().err
    assert out.is_file() and "warning: MetaCanvas weights 'metacanvas_t2i' were trained at 32x32" in err
    assert "64x32 is far from that" in err and "MetaCanvasWarning" not in err


def test_node_shows_the_warning_on_the_console_and_in_the_editor(sockets, monkeypatch, capsys):
    shown = []
    mm = types.ModuleType("comfy.model_management")
    mm.throw_exception_if_processing_interrupted = lambda: None
    comfy = types.ModuleType("comfy")
    comfy.__path__, comfy.model_management = [], mm
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(
        instance=types.SimpleNamespace(send_progress_text=lambda text, node_id: shown.append((node_id, text))))
    utils = types.ModuleType("comfy_execution.utils")
    utils.get_executing_context = lambda: types.SimpleNamespace(node_id="12")
    execution = types.ModuleType("comfy_execution")
    execution.__path__, execution.utils = [], utils
    for name, module in {"comfy": comfy, "comfy.model_management": mm, "server": server,
                         "comfy_execution": execution, "comfy_execution.utils": utils}.items():
        monkeypatch.setitem(sys.modules, name, module)
    kw = dict(backbone=sockets["METACANVAS_BACKBONE"], positive=sockets["METACANVAS_PLAN"], seed=0, steps=1, cfg=1.0)
    for _ in range(2):  # every run, not once per session
        image, _ = NODES["MetaCanvasSampleImage"]().sample(width=64, height=32, **kw)
    assert image.shape == (1, 32, 64, 3)
    assert len(shown) == 2 and shown[0][0] == "12"
    assert shown[0][1].startswith("Sample Image: MetaCanvas weights 'metacanvas_t2i' were trained at 32x32")
    assert capsys.readouterr().out.count("[MetaCanvas] Sample Image: warning: MetaCanvas weights") == 2
    NODES["MetaCanvasSampleImage"]().sample(width=32, height=32, **kw)
    assert len(shown) == 2  # a trained size: nothing to say
