"""The Hugging Face GPT-2 layout: ``config.json`` + ``model.safetensors``, read and written.

podium's ``GPT2`` names its parameters like HF's without the ``transformer.`` prefix; HF keeps
``c_attn``, ``c_proj`` and ``c_fc`` as ``Conv1D`` (weight (in, out), the transpose of a
``Linear``'s), has ``lm_head.weight`` tied to ``wte`` and, in older files, the causal-mask
buffers ``attn.bias`` / ``attn.masked_bias``. ``GPT2Adapter`` converts between the two, so a GPT-2
checkpoint a user has on disk starts a run (``model.init_from``) and a podium checkpoint can be
handed to ``transformers`` (``export_hf``). Files are read with ``safetensors`` (no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from podium.engine.errors import ProfileError
from podium.engine.families.amt.config import GPT2Config

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_BUFFERS = (".attn.bias", ".attn.masked_bias")
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


class GPT2Adapter:
    """HF GPT-2 names <-> podium's (a ``StateDictAdapter``)."""

    def to_native(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, tensor in state.items():
            name = name.removeprefix("transformer.")
            if name == "lm_head.weight" or name.endswith(_BUFFERS):
                continue  # tied to wte; causal masks podium does not keep
            out[name] = tensor.t().contiguous() if name.endswith(_CONV1D) else tensor
        return out

    def from_native(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, tensor in state.items():
            t = tensor.t() if name.endswith(_CONV1D) else tensor
            out[f"transformer.{name}"] = t.detach().contiguous()
        return out


def hf_config(cfg: GPT2Config, vocab_size: int) -> dict[str, Any]:
    """The ``config.json`` transformers' ``GPT2Config`` reads for this model."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": vocab_size,
        "n_positions": cfg.max_len,
        "n_ctx": cfg.max_len,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": cfg.ff_width,
        "activation_function": "gelu_new",
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "tie_word_embeddings": True,
        "scale_attn_weights": True,
        "bos_token_id": 2,
        "eos_token_id": 3,
    }


def config_from_hf(data: Mapping[str, Any]) -> tuple[GPT2Config, int]:
    """(podium's config, vocab size) of an HF GPT-2 ``config.json``; ProfileError for what
    podium's GPT-2 does not do (another activation, untied heads, scaled attention off...)."""
    unsupported = {
        "activation_function": ("gelu_new", "gelu_pytorch_tanh"),
        "scale_attn_weights": (True,),
        "scale_attn_by_inverse_layer_idx": (False,),
        "reorder_and_upcast_attn": (False,),
        "tie_word_embeddings": (True,),
    }
    for key, allowed in unsupported.items():
        if key in data and data[key] not in allowed:
            raise ProfileError(f"{CONFIG}: {key} = {data[key]!r} is not supported (only {allowed})")
    d_model = int(data.get("n_embd", 768))
    cfg = GPT2Config(
        n_layers=int(data.get("n_layer", 12)),
        n_heads=int(data.get("n_head", 12)),
        d_model=d_model,
        d_ff=int(data.get("n_inner") or 4 * d_model),
        max_len=int(data.get("n_positions", 1024)),
        dropout=float(data.get("resid_pdrop", 0.1)),
        layer_norm_eps=float(data.get("layer_norm_epsilon", 1e-5)),
    )
    return cfg, int(data.get("vocab_size", 50257))


def save_hf(model: torch.nn.Module, directory: Path) -> Path:
    """Write ``model`` (a podium ``GPT2``) in the HF layout; ``transformers`` loads it with
    ``GPT2LMHeadModel.from_pretrained(directory)``."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config = hf_config(model.cfg, model.vocab_size)
    state = GPT2Adapter().from_native({k: v.cpu() for k, v in model.state_dict().items()})
    save_file(state, str(directory / WEIGHTS), metadata={"format": "pt"})
    (directory / CONFIG).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    return directory


def load_hf(directory: Path) -> tuple[GPT2Config, int, dict[str, torch.Tensor]]:
    """(config, vocab size, podium-named weights) of an HF GPT-2 directory.

    Raises:
        ProfileError: a missing or unreadable file, named.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory).expanduser()
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise ProfileError(f"{directory}: no {name} (a Hugging Face GPT-2 directory has both)")
    try:
        data = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        state = load_file(str(directory / WEIGHTS))
    except (OSError, ValueError, SafetensorError) as exc:
        raise ProfileError(f"{directory}: unreadable GPT-2 files ({exc})") from None
    cfg, vocab_size = config_from_hf(data)
    return cfg, vocab_size, GPT2Adapter().to_native(state)


def init_from_hf(model: torch.nn.Module, directory: str) -> None:
    """Fill ``model`` with the weights of the HF directory ``directory``; ProfileError when its
    sizes differ from the profile's (``model.init_from``)."""
    cfg, vocab_size, state = load_hf(Path(directory))
    mine = model.cfg
    for field in ("n_layers", "n_heads", "d_model", "ff_width", "max_len"):
        if getattr(cfg, field) != getattr(mine, field):
            raise ProfileError(
                f"model.init_from: {directory} has {field} {getattr(cfg, field)}, the profile "
                f"{getattr(mine, field)}"
            )
    if vocab_size != model.vocab_size:
        raise ProfileError(
            f"model.init_from: {directory} has vocab_size {vocab_size}, the data "
            f"{model.vocab_size} (data.vocab_size)"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ProfileError(
            f"model.init_from: {directory}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def export_hf(run_path: Path, checkpoint: str, out: Path) -> Path:
    """A run's checkpoint as an HF GPT-2 directory."""
    from podium.engine.generate import load_model

    model, _ = load_model(Path(run_path), checkpoint)
    return save_hf(model, Path(out))
