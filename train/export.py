"""Write a model as a tinyformer checkpoint: ONE .safetensors file.

Tensors: the module's ``state_dict()`` (names as in train/reference.py, which are the seeds' names), each made
contiguous and cast to ``dtype`` (torch.float32, torch.float16 or torch.bfloat16). Registered persistent
buffers (e.g. ``encoder.pos_encoding.pe``) are included as the state_dict carries them; loaders ignore them.

``__metadata__``: {"config": json.dumps(config)} plus, when given, {"tokenizer": json.dumps(tokenizer)}.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

import torch
from safetensors.torch import save_file

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def checkpoint_tensors(model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"unsupported dtype {dtype}")
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        if t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.contiguous().clone()
    return tensors


def save_checkpoint(model: torch.nn.Module, config: Dict[str, Any], path: str,
                    tokenizer: Optional[Dict[str, Any]] = None, dtype: torch.dtype = torch.float32,
                    extra_metadata: Optional[Dict[str, str]] = None) -> None:
    metadata = {"config": json.dumps(config)}
    if tokenizer is not None:
        metadata["tokenizer"] = json.dumps(tokenizer)
    # e.g. {"output_constraint": "iso_date"}: the core's constrained decoding (src/model/constraint.rs)
    metadata.update(extra_metadata or {})
    save_file(checkpoint_tensors(model, dtype), path, metadata=metadata)


def load_checkpoint(path: str):
    """Returns (state_dict as float32 tensors, config dict, tokenizer dict or None)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    tok = json.loads(meta["tokenizer"]) if "tokenizer" in meta else None
    return tensors, json.loads(meta["config"]), tok
