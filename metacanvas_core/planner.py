"""The MLLM planner: a frozen Qwen2.5-VL that reads the prompt and plans on learnable canvas tokens.

Layout of one sequence: ``[visuals] [prompt tokens, <eos>] [padding] [canvas tokens]``, where each visual (an
image or clip the prompt is about, optional) is ``<|vision_start|> <|image_pad|> x n <|vision_end|>`` as in
Qwen2.5-VL's chat template, its placeholders filled by the model's own vision tower and numbered by the model's
own `get_rope_index`. Canvas tokens get the M-RoPE positions Qwen2.5-VL gives image (or, for keyframes, video)
patches placed after the text (see `canvas_grid.canvas_position_ids`); padding is masked and has no position of
its own, so a batched prompt plans exactly as it would alone.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

from .canvas_grid import CanvasGrid, canvas_position_ids
from .canvas_lora import CanvasLoRA
from .errors import MetaCanvasError
from .visual_inputs import IMAGE, VIDEO, Visual, prepare_visuals


@dataclass
class PlannerOutput:
    text_states: torch.Tensor  # (B, L, D) last hidden states of the prompt (visuals included), zero on padding
    text_mask: torch.Tensor  # (B, L) 1 for real tokens
    canvas_states: torch.Tensor | None  # (B, K, D) hidden states at the canvas positions: the plan


class Planner:
    """A frozen Qwen2.5-VL language model plus its tokenizer. Never trained here: eval mode, no gradients."""

    def __init__(
        self, model: Qwen2_5_VLForConditionalGeneration, tokenizer, name: str = "planner", image_processor=None
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_processor = image_processor  # Qwen2VLImageProcessor(Pil); None: the planner sees no images
        self.name = name
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> "Planner":
        """Load a Qwen2.5-VL-*-Instruct folder (config.json, safetensors shards, tokenizer files)."""
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise MetaCanvasError(
                f"planner folder {str(folder)!r} has no config.json: point it at a Qwen2.5-VL folder "
                "(config.json, *.safetensors, tokenizer files), e.g. one under ComfyUI/models/LLM"
            )
        try:
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, dtype=dtype, use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            # The PIL backend on purpose: no torchvision needed, and the one the built-in planner was trained with.
            processor = (Qwen2VLImageProcessorPil.from_pretrained(folder)
                         if (folder / "preprocessor_config.json").is_file() else None)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
            raise MetaCanvasError(
                f"could not load the planner from {str(folder)!r} ({e}); it must be a complete Qwen2.5-VL folder "
                "with safetensors weights and a tokenizer: re-download or re-copy it"
            ) from e
        return cls(model.to(device), tokenizer, name=folder.name, image_processor=processor)

    @property
    def language_model(self) -> torch.nn.Module:
        """The decoder the prompt and canvas run through (visuals enter it through `model.visual` first)."""
        return self.model.model.language_model

    @property
    def hidden_size(self) -> int:
        return self.model.config.text_config.hidden_size

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def tokenize(self, prompts: list[str]) -> list[list[int]]:
        """Token ids of each prompt followed by end-of-sequence; unknown words are an error, not silent noise."""
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        unk = self.tokenizer.unk_token_id
        if unk is not None:
            for prompt, seq in zip(prompts, ids):
                if unk in seq:
                    words = prompt.lower().replace("?", " ?").split()
                    unknown = [w for w in words if self.tokenizer.convert_tokens_to_ids(w) == unk]
                    raise MetaCanvasError(
                        f"prompt {prompt!r} has words the planner {self.name!r} does not know: {unknown}. "
                        "The built-in tiny planner only knows the shapes world (e.g. 'a red circle at top left "
                        "and a blue square at bottom right'); use a real Qwen2.5-VL planner for free text"
                    )
        return [seq + [self.eos_id] for seq in ids]

    @property
    def max_positions(self) -> int:
        cfg = self.model.config
        return getattr(cfg, "text_config", cfg).max_position_embeddings

    def max_prompt_tokens(self, grid: CanvasGrid | None = None) -> int:
        """How many prompt tokens (end-of-sequence included) fit before the canvas on `grid` runs out of positions.

        M-RoPE numbers a canvas like an image: after the text, every axis counts on from the text's length, so the
        canvas needs max(frames, rows, cols) positions, not one per token."""
        span = 0 if grid is None else int(canvas_position_ids(0, grid).max()) + 1
        return self.max_positions - span

    def _check_length(self, ids: list[list[int]], grid: CanvasGrid | None) -> None:
        """Refuse, rather than cut, a prompt past the planner's context. Text encoders of CLIP lineage truncate
        silently, but here the prompt *is* the layout: a cut plan drops whatever the cut part asked for (the last
        objects, their places) and draws something unrelated, with nothing on screen to say why."""
        limit = self.max_prompt_tokens(grid)
        for seq in ids:
            if len(seq) > limit:
                canvas = f" minus {self.max_positions - limit} for the canvas" if grid is not None else ""
                raise MetaCanvasError(
                    f"prompt is {len(seq)} tokens long (end-of-sequence included), but planner {self.name!r} reads "
                    f"at most {limit} ({self.max_positions} positions{canvas}): shorten the prompt; it is not cut, "
                    "since a cut plan silently leaves out what the rest asked for"
                )

    def encode(
        self,
        prompts: list[str],
        canvas_tokens: torch.Tensor | None = None,
        grid: CanvasGrid | None = None,
        canvas_lora: CanvasLoRA | None = None,
        visuals: list[list[Visual]] | None = None,
    ) -> PlannerOutput:
        """Run the MLLM once over prompts (+ canvas tokens (K, D) laid out on `grid`, if given, and the
        connector's canvas-only LoRA, if it has one).

        `visuals[i]` lists what prompt i is about, in order, before its text: images ((H, W, 3) uint8 or float in
        [0, 1], or PIL) and clips (`visual_inputs.Video`); an empty list for none.
        Gradients reach `canvas_tokens` and the LoRA when they require grad (training); the MLLM stays frozen.
        """
        if not prompts:
            raise MetaCanvasError("the planner got no prompts: pass at least one")
        if canvas_tokens is not None and (grid is None or canvas_tokens.shape[0] != grid.num_tokens):
            raise MetaCanvasError(f"canvas tokens {tuple(canvas_tokens.shape)} do not fill the canvas grid {grid}")
        if visuals is not None and len(visuals) != len(prompts):
            raise MetaCanvasError(f"visuals must list what each of the {len(prompts)} prompts sees (an empty list "
                                  f"for none), got {len(visuals)} entries")
        ids = self.tokenize(prompts)
        seen = None
        if visuals is not None and any(len(v) for v in visuals):
            seen = prepare_visuals(self.image_processor, self.model.config, visuals)
            ids = [p + seq for p, seq in zip(seen.prefixes, ids)]
        k = 0 if canvas_tokens is None else canvas_tokens.shape[0]
        self._check_length(ids, grid if k else None)
        b, text_len = len(ids), max(len(s) for s in ids)
        dev = self.device
        input_ids = torch.full((b, text_len), self.pad_id, dtype=torch.long, device=dev)
        mask = torch.zeros(b, text_len + k, dtype=torch.long, device=dev)
        positions = torch.zeros(3, b, text_len + k, dtype=torch.long, device=dev)
        types = torch.zeros(b, text_len, dtype=torch.long, device=dev)
        time_interval = self.model.config.vision_config.tokens_per_second * grid.keyframe_seconds if k else 1
        for i, seq in enumerate(ids):
            n = len(seq)
            input_ids[i, :n] = torch.tensor(seq, device=dev)
            mask[i, :n] = 1
            if seen is not None and seen.prefixes[i]:
                types[i, : len(seen.types[i])] = torch.tensor(seen.types[i], device=dev)
                positions[:, i, :n] = self.model.model.get_rope_index(
                    input_ids[i : i + 1, :n], types[i : i + 1, :n], **seen.grids_of(i)
                )[0][:, 0]
            else:
                positions[:, i, :n] = torch.arange(n, device=dev)
            if k:
                mask[i, text_len:] = 1
                # The last prompt token is <eos>, plain text: the canvas continues right after it.
                start = int(positions[0, i, n - 1]) + 1
                positions[:, i, text_len:] = canvas_position_ids(start, grid, time_interval).to(dev)
        embeds = self.model.get_input_embeddings()(input_ids)
        if seen is not None:
            embeds = self._fill_visuals(embeds, types, seen)
        if k:
            canvas = canvas_tokens.to(dev, embeds.dtype).unsqueeze(0).expand(b, -1, -1)
            embeds = torch.cat([embeds, canvas], dim=1)
        grad = canvas_tokens is not None and canvas_tokens.requires_grad and torch.is_grad_enabled()
        lm = self.language_model
        lora = canvas_lora.applied(lm, text_len) if k and canvas_lora is not None else nullcontext()
        with torch.set_grad_enabled(grad), lora:
            hidden = lm(
                inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False
            ).last_hidden_state
        text_mask = mask[:, :text_len]
        text_states = hidden[:, :text_len] * text_mask.unsqueeze(-1).to(hidden.dtype)
        return PlannerOutput(text_states, text_mask, hidden[:, text_len:] if k else None)

    def _fill_visuals(self, embeds: torch.Tensor, types: torch.Tensor, seen) -> torch.Tensor:
        """Put the vision tower's features into the placeholders, as Qwen2.5-VL's forward does (its
        `get_image_features` / `get_video_features`, then `masked_scatter` in sequence order). The placeholders are
        found by their token type, so a prompt that happens to spell <|image_pad|> cannot shift them."""
        model, dev = self.model.model, embeds.device
        with torch.no_grad():
            for kind, pixels, grid_thw in (
                (IMAGE, seen.pixel_values, seen.image_grid_thw),
                (VIDEO, seen.pixel_values_videos, seen.video_grid_thw),
            ):
                if pixels is None:
                    continue
                get = model.get_image_features if kind == IMAGE else model.get_video_features
                feats = torch.cat(get(pixels.to(dev), grid_thw.to(dev), return_dict=True).pooler_output)
                where = (types == kind).unsqueeze(-1).expand_as(embeds)
                embeds = embeds.masked_scatter(where, feats.to(dev, embeds.dtype))
        return embeds
