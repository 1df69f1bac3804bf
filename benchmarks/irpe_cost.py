"""Cost of iRPE on CPU: DeiT-Ti at 224 px, forward + backward, vs plain attention (issue 14, acceptance 3).

Times a train step (forward, cross-entropy, backward) of, side by side in one process (round-robin):
* `timm`: timm's `deit_tiny_patch16_224` as shipped (fused scaled-dot-product attention);
* `nonfused`: the same model with timm's explicit attention (`fused_attn = False`), the form iRPE extends;
* `irpe_k`: `deit_tiny_patch16_224_ctx_product_50_shared_k` (contextual product iRPE on keys, the published one);
* `irpe_qkv`: the same with iRPE on q, k and v (not published for DeiT-Ti; shows the cost of the other terms).
Then the pure-PyTorch lookups of spec §7 on their own (forward + backward, DeiT-Ti shapes): the q/k lookup
as a gather, as the original's flat indexing and as a one-hot einsum; the value term as a scatter-add of the
attention into buckets, as the original's gathered (L, L, head_dim) table and as a one-hot einsum.

Process CPU seconds on one thread by default (the machine is shared), median over repeats.

    PYTHONPATH=src python benchmarks/irpe_cost.py [--batch 8] [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from functools import partial

import timm
import torch
from common import time_round_robin, train_step

import cream  # noqa: F401  (registers the iRPE models)
from cream.models.irpe_deit import SIZES, IRPEVisionTransformer
from cream.nn.irpe import IRPEConfig, bucket_ids


def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    nonfused = timm.create_model("deit_tiny_patch16_224")
    for blk in nonfused.blocks:
        blk.attn.fused_attn = False
    qkv = IRPEConfig(method="product", mode="ctx", ratio=1.9, shared_head=True, skip=1, on="qkv")
    out = {"timm": timm.create_model("deit_tiny_patch16_224"), "nonfused": nonfused,
           "irpe_k": timm.create_model("deit_tiny_patch16_224_ctx_product_50_shared_k"),
           "irpe_qkv": IRPEVisionTransformer(irpe=qkv, patch_size=16, **SIZES["tiny"])}
    with torch.no_grad():  # non-zero tables, as after training
        for m in out.values():
            for n, p in m.named_parameters():
                if ".irpe.table_" in n:
                    p.normal_(std=0.02)
    return out


def model_steps(batch: int, repeats: int, stat) -> dict:
    x, y = torch.randn(batch, 3, 224, 224), torch.randint(0, 1000, (batch,))
    ms = models()
    t = time_round_robin({k: partial(train_step, m, x=x, y=y) for k, m in ms.items()}, repeats, stat=stat)
    res = {f"{k}_s": round(v, 4) for k, v in t.items()}
    for k in ("irpe_k", "irpe_qkv"):
        res[f"{k}_vs_timm"] = round(t[k] / t["timm"], 3)
        res[f"{k}_vs_nonfused"] = round(t[k] / t["nonfused"], 3)
    res["nonfused_vs_timm"] = round(t["nonfused"] / t["timm"], 3)
    return res


def lookups(batch: int, repeats: int, stat) -> dict:
    """One layer's q/k and v lookups of DeiT-Ti (3 heads, 197 tokens, head_dim 64, 50 buckets)."""
    H, L, d = 3, 197, 64
    ids = bucket_ids("product", 1.9, (14, 14), 1, 50, torch.device("cpu"))[0]
    nb = int(ids.max()) + 1
    onehot = torch.nn.functional.one_hot(ids, nb).float()
    flat = (ids + torch.arange(L)[:, None] * nb).flatten()
    table = torch.randn(1, nb, d, requires_grad=True)
    q = torch.randn(batch, H, L, d, requires_grad=True)
    attn = torch.randn(batch, H, L, L).softmax(-1).requires_grad_()

    def qk(how: str) -> None:
        t = q @ table.transpose(-2, -1)
        if how == "gather":
            y = t.gather(-1, ids.expand(batch, H, L, L))
        elif how == "flat_index":
            y = t.flatten(2)[:, :, flat].view(batch, H, L, L)
        else:
            y = torch.einsum("bhqn,qkn->bhqk", t, onehot)
        y.sum().backward()

    def v(how: str) -> None:
        if how == "scatter":
            y = attn.new_zeros(batch, H, L, nb).scatter_add(-1, ids.expand(batch, H, L, L), attn) @ table
        elif how == "gathered_table":
            y = torch.einsum("bhqk,hqkd->bhqd", attn, table[:, ids])
        else:
            y = torch.einsum("bhqk,qkn->bhqn", attn, onehot) @ table
        y.sum().backward()

    fns = {f"qk_{h}": partial(qk, h) for h in ("gather", "flat_index", "onehot_einsum")}
    fns |= {f"v_{h}": partial(v, h) for h in ("scatter", "gathered_table", "onehot_einsum")}
    return {f"{k}_ms": round(1e3 * s, 2) for k, s in time_round_robin(fns, repeats, stat=stat).items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--stat", choices=["median", "min"], default="median")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stat = {"median": statistics.median, "min": min}[args.stat]
    print(json.dumps({
        "benchmark": "irpe_cost", "torch": torch.__version__, "timm": timm.__version__,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "batch": args.batch, "repeats": args.repeats,
        "timing": f"{args.stat} over round-robin repeats of process CPU seconds per train step "
                  "(forward + cross-entropy + backward), 224 px",
        "deit_tiny": model_steps(args.batch, args.repeats, stat),
        "lookups_one_layer": lookups(args.batch, args.repeats, stat),
    }, indent=1))


if __name__ == "__main__":
    main()
