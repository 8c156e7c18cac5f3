"""The training step the Rust engine reproduces, in PyTorch: objective, optimizer groups and lr schedule.

Objective of one batch (``objective``):

* decoder / llama (also MoE and attention-only decoders): inputs [B, T] -> logits [B, T, V]; the mean
  cross-entropy over all B*T target positions (every target id counts, 0 included).
* encoder_decoder: ``model(src, tgt_in)``; the mean cross-entropy over the ``tgt_out`` positions that are not
  PAD (0). The masks are train/reference.py's: src padding masks the encoder self-attention keys and the
  cross-attention keys; the decoder self-attention is causal AND tgt_in-not-PAD.
* MoE decoder: reference.py's MoEFeedForward over the whole batch (capacity int(capacity_factor * N * k / E),
  N = B*T); gradients reach the router through the renormalised top-k weights of the kept assignments and
  the experts through the tokens they kept. With ``aux_loss_weight`` w > 0 the objective is
  CE + w * sum over MoE layers of aux, aux = E * sum_e f_e * P_e (Switch Transformer), where
  f_e = (top-k assignments to e, counted before capacity drops) / (N * k) is a constant and
  P_e = the mean over the N tokens of the router softmax probability of e carries the gradient.

Optimizer (nanoGPT's configure_optimizers): torch.optim.AdamW with two groups, weight decay on every
parameter of 2 or more dimensions and 0 on the rest; the global gradient norm clipped with
``torch.nn.utils.clip_grad_norm_`` (scale min(1, clip / (norm + 1e-6))); the lr set by hand on both groups
before each step from ``lr_at``. A parameter the objective does not reach in a step (a MoE expert that no
token was routed to) steps with a zero gradient, as a dense gradient buffer gives: weight decay applies, its
moments decay and its step count advances (PyTorch alone would skip a parameter whose grad is None).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from reference import PAD_ID

CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_: clip_coef = max_norm / (total_norm + 1e-6)


def batch_tensors(config: Dict[str, Any], step: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """One entry of a batches.json ``steps`` list as LongTensors."""
    if config["arch"] == "encoder_decoder":
        keys = ("src", "tgt_in", "tgt_out")
    else:
        keys = ("inputs", "targets")
    return {k: torch.tensor(step[k], dtype=torch.long) for k in keys}


def moe_aux_loss(record: Dict[str, Any], num_experts: int) -> torch.Tensor:
    """Switch load-balancing loss of one MoE layer from its routing record (reference.MoEFeedForward)."""
    probs = record["router_probs"].reshape(-1, num_experts)  # [N, E], carries the gradient
    chosen = record["experts"].reshape(-1)  # [N * k], before capacity drops
    f = torch.bincount(chosen, minlength=num_experts).to(probs.dtype) / chosen.numel()
    p = probs.mean(dim=0)
    return num_experts * (f.detach() * p).sum()


def objective(model: nn.Module, batch: Dict[str, torch.Tensor], aux_loss_weight: float = 0.0) -> Dict[str, Any]:
    """Returns {"objective", "ce", "aux" (list per MoE layer), "moe" (routing records)}."""
    cfg = model.config
    if cfg["arch"] == "encoder_decoder":
        out = model(batch["src"], batch["tgt_in"])
        logits = out["logits"]
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch["tgt_out"].reshape(-1),
                             ignore_index=PAD_ID)
    else:
        out = model(batch["inputs"])
        logits = out["logits"]
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch["targets"].reshape(-1))
    records = out.get("moe", [])
    aux = [moe_aux_loss(r, cfg["moe"]["num_experts"]) for r in records]
    total = ce
    if aux and aux_loss_weight:
        total = ce + aux_loss_weight * torch.stack(aux).sum()
    return {"objective": total, "ce": ce, "aux": aux, "moe": records}


def lr_at(step: int, lr_max: float, min_lr: float, warmup: int, total: int) -> float:
    """Steps counted from 1: linear warmup to lr_max over ``warmup`` steps, then cosine down to min_lr at
    ``total``."""
    if step <= warmup:
        return lr_max * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (lr_max - min_lr) * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_adamw(model: nn.Module, hyper: Dict[str, Any]) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, hyper["weight_decay"]), lr=hyper["lr_max"],
                             betas=(hyper["beta1"], hyper["beta2"]), eps=hyper["eps"], foreach=False)


def train(model: nn.Module, batches: List[Dict[str, torch.Tensor]], hyper: Dict[str, Any],
          keep_first_grads: bool = True) -> Dict[str, Any]:
    """Runs one AdamW step per batch. Returns the per-step history and, with keep_first_grads, the gradients
    of step 1's objective (before clipping) by parameter name."""
    opt = make_adamw(model, hyper)
    params = [p for p in model.parameters() if p.requires_grad]
    hist: Dict[str, Any] = {"losses": [], "ce_losses": [], "aux_losses": [], "grad_norms": [], "lrs": [],
                            "clipped": [], "moe_dropped": [], "router_margins": [],
                            "first_grads": {}}
    for s, batch in enumerate(batches, start=1):
        opt.zero_grad(set_to_none=True)
        res = objective(model, batch, hyper["aux_loss_weight"])
        res["objective"].backward()
        for p in params:
            # a parameter the objective does not reach this step (a MoE expert no token was routed to) steps
            # with a zero gradient: decayed, its moments decayed, its step count advanced like the others
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if s == 1 and keep_first_grads:
            hist["first_grads"] = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        norm = float(torch.nn.utils.clip_grad_norm_(params, hyper["clip"]))
        lr = lr_at(s, hyper["lr_max"], hyper["min_lr"], hyper["warmup"], hyper["total"])
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        hist["losses"].append(res["objective"].item())
        hist["ce_losses"].append(res["ce"].item())
        hist["aux_losses"].append([a.item() for a in res["aux"]])
        hist["grad_norms"].append(norm)
        hist["lrs"].append(lr)
        hist["clipped"].append(hyper["clip"] / (norm + CLIP_EPS) < 1.0)
        hist["moe_dropped"].append([int((~r["kept"]).sum()) for r in res["moe"]])
        hist["router_margins"].append([topk_margin(r) for r in res["moe"]])
    return hist


@torch.no_grad()
def topk_margin(record: Dict[str, Any]) -> float:
    """Smallest gap between the k-th and (k+1)-th router probability over the tokens (how far the routing is
    from a tie that rounding could flip)."""
    p = record["router_probs"].reshape(-1, record["router_probs"].size(-1))
    k = record["experts"].size(-1)
    s = torch.sort(p, dim=-1, descending=True).values
    return float((s[:, k - 1] - s[:, k]).min()) if s.size(1) > k else math.inf

