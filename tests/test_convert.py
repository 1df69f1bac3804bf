"""Importing an original AutoFormer supernet checkpoint (`cream convert`).

The checkpoint is written here in the original's module names and layout, and a reference forward
written from the spec (§2–§3: interleaved qkv weight rows, contiguous qkv bias, the explicit N×N
relative-position embeddings) computes each subnet straight from it. The converted supernet and its
extracted models must match that reference.
"""

from __future__ import annotations

import argparse
import json
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import sets
from safetensors.torch import load_file

from cream.cli import main as cli
from cream.config import RunConfig, load_config
from cream.models import load_exported
from cream.workflows.export import export
from cream.workflows.supernet import load_supernet

E, HEAD_DIM, HEADS, DEPTH, HIDDEN, R, PATCH, IMG, CLASSES = 32, 16, 2, 3, 128, 2, 4, 12, 5
SPACE = ["space.embed_dims=[24,32]", "space.depths=[2,3]", "space.num_heads=[1,2]", "space.mlp_ratios=[2.0,4.0]",
         f"space.head_dim={HEAD_DIM}", f"space.img_size={IMG}", f"space.patch_size={PATCH}",
         f"space.max_relative_position={R}", "space.family=vit", f"data.image_size={IMG}"]


def original_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the original AutoFormer supernet's parameter names and shapes."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.2

    n = (IMG // PATCH) ** 2 + 1
    state = {"patch_embed_super.proj.weight": t(E, 3, PATCH, PATCH), "patch_embed_super.proj.bias": t(E),
             "cls_token": t(1, 1, E), "pos_embed": t(1, n, E), "norm.weight": 1 + t(E), "norm.bias": t(E),
             "head.weight": t(CLASSES, E), "head.bias": t(CLASSES)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        state.update({
            b + "attn.qkv.weight": t(3 * HEADS * HEAD_DIM, E), b + "attn.qkv.bias": t(3 * HEADS * HEAD_DIM),
            b + "attn.proj.weight": t(E, HEADS * HEAD_DIM), b + "attn.proj.bias": t(E),
            b + "attn_layer_norm.weight": 1 + t(E), b + "attn_layer_norm.bias": t(E),
            b + "ffn_layer_norm.weight": 1 + t(E), b + "ffn_layer_norm.bias": t(E),
            b + "fc1.weight": t(HIDDEN, E), b + "fc1.bias": t(HIDDEN),
            b + "fc2.weight": t(E, HIDDEN), b + "fc2.bias": t(E),
        })
        for enc in "kv":
            for table in "vh":
                state[f"{b}attn.rel_pos_embed_{enc}.embeddings_table_{table}"] = t(2 * R + 2, HEAD_DIM)
    return state


def reference_forward(sd: dict[str, torch.Tensor], arch: dict, x: torch.Tensor) -> torch.Tensor:
    """The original's computation for `arch`, written from the spec, on the original state dict."""
    d, L = arch["embed_dim"], arch["depth"]
    t = F.conv2d(x, sd["patch_embed_super.proj.weight"][:d], sd["patch_embed_super.proj.bias"][:d], stride=PATCH)
    t = t.flatten(2).transpose(1, 2)
    B, side = x.shape[0], IMG // PATCH
    t = torch.cat([sd["cls_token"][..., :d].expand(B, -1, -1), t], 1) + sd["pos_embed"][..., :d]
    N = t.shape[1]
    rows, cols = [0] * N, [0] * N
    for j in range(1, N):
        rows[j], cols[j] = divmod(j - 1, side)
    iv = torch.tensor([[0 if 0 in (i, j) else max(-R, min(R, rows[j] - rows[i])) + R + 1 for j in range(N)]
                       for i in range(N)])
    ih = torch.tensor([[0 if 0 in (i, j) else max(-R, min(R, cols[j] - cols[i])) + R + 1 for j in range(N)]
                       for i in range(N)])
    for i in range(L):
        b, h, f = f"blocks.{i}.", arch["num_heads"][i], int(d * arch["mlp_ratio"][i])
        q = h * HEAD_DIM
        y = F.layer_norm(t, (d,), sd[b + "attn_layer_norm.weight"][:d], sd[b + "attn_layer_norm.bias"][:d], 1e-5)
        w = sd[b + "attn.qkv.weight"]
        w = torch.cat([w[k:3 * q:3, :d] for k in range(3)])  # interleaved rows (spec §3)
        qkv = F.linear(y, w, sd[b + "attn.qkv.bias"][:3 * q])  # contiguous bias (spec §8 item 1)
        qh, kh, vh = qkv.reshape(B, N, 3, h, HEAD_DIM).permute(2, 0, 3, 1, 4)
        rk = (sd[b + "attn.rel_pos_embed_k.embeddings_table_v"][iv]
              + sd[b + "attn.rel_pos_embed_k.embeddings_table_h"][ih])
        rv = (sd[b + "attn.rel_pos_embed_v.embeddings_table_v"][iv]
              + sd[b + "attn.rel_pos_embed_v.embeddings_table_h"][ih])
        logits = (qh @ kh.transpose(-2, -1) + torch.einsum("bhid,ijd->bhij", qh, rk)) * HEAD_DIM**-0.5
        a = logits.softmax(-1)
        o = (a @ vh + torch.einsum("bhij,ijd->bhid", a, rv)).transpose(1, 2).reshape(B, N, q)
        t = t + F.linear(o, sd[b + "attn.proj.weight"][:d, :q], sd[b + "attn.proj.bias"][:d])
        y = F.layer_norm(t, (d,), sd[b + "ffn_layer_norm.weight"][:d], sd[b + "ffn_layer_norm.bias"][:d], 1e-5)
        y = F.gelu(F.linear(y, sd[b + "fc1.weight"][:f, :d], sd[b + "fc1.bias"][:f]))
        t = t + F.linear(y, sd[b + "fc2.weight"][:d, :f], sd[b + "fc2.bias"][:d])
    t = F.layer_norm(t, (d,), sd["norm.weight"][:d], sd["norm.bias"][:d], 1e-5)
    return F.linear(t[:, 1:].mean(1), sd["head.weight"][:, :d], sd["head.bias"])


@pytest.fixture()
def original_ckpt(tmp_path):
    state = original_state()
    path = tmp_path / "supernet-toy.pth"
    # as the original training script saves it: DDP-free state dict plus its argparse namespace
    torch.save({"model": state, "epoch": 9, "args": argparse.Namespace(gp=True, relative_position=True)}, path)
    return path, state


def test_converted_supernet_computes_what_the_original_computed(original_ckpt, tmp_path, capsys):
    path, state = original_ckpt
    out = tmp_path / "converted"
    assert cli(["convert", str(path), "--out", str(out), "--json", *sets(SPACE)]) == 0
    cfg = load_config(RunConfig, out / "config.yaml")
    assert cfg.space["legacy_qkv_bias"] is True and cfg.space["num_classes"] == CLASSES
    net = load_supernet(cfg, out, CLASSES).eval()
    x = torch.randn(2, 3, IMG, IMG)
    rng = random.Random(0)
    archs = [net.space.largest(), net.space.smallest()] + [net.space.sample(rng) for _ in range(6)]
    with torch.no_grad():
        for arch in archs:
            ref = reference_forward(state, arch, x)
            net.set_arch(arch)
            torch.testing.assert_close(net(x), ref, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(net.extract(arch).eval()(x), ref, atol=1e-5, rtol=1e-4)


def test_converted_run_exports_a_standalone_model(original_ckpt, tmp_path):
    path, state = original_ckpt
    out = tmp_path / "converted"
    assert cli(["convert", str(path), "--out", str(out), *sets(SPACE)]) == 0
    arch = {"embed_dim": 24, "depth": 2, "num_heads": [1, 2], "mlp_ratio": [4.0, 2.0]}
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps(arch))
    info = export(out, arch_file, tmp_path / "model.safetensors")
    assert info["arch"] == arch
    model = load_exported(tmp_path / "model.safetensors").eval()
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_forward(state, arch, x), atol=1e-5, rtol=1e-4)


def test_ddp_prefixed_checkpoint_converts(tmp_path):
    """A state dict saved from a DistributedDataParallel wrapper gives the same supernet weights."""
    for name, prefix in (("ddp", "module."), ("plain", "")):
        torch.save({"model": {prefix + k: v for k, v in original_state().items()}}, tmp_path / f"{name}.pth")
        assert cli(["convert", str(tmp_path / f"{name}.pth"), "--out", str(tmp_path / name), *sets(SPACE)]) == 0
    ddp, plain = (load_file(tmp_path / name / "supernet.safetensors") for name in ("ddp", "plain"))
    assert ddp.keys() == plain.keys() and all(torch.equal(ddp[k], plain[k]) for k in ddp)


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("garbage", "cannot be read"),
    ("foreign", "unknown keys"),
    ("wrong_space", "does not fit space"),
    ("shallow_space", "does not fit space"),
    ("classes", "classifies 5 classes"),
])
def test_bad_checkpoints_get_one_line_and_write_nothing(tmp_path, capsys, case, message):
    path = tmp_path / "ckpt.pth"
    space = list(SPACE)
    if case == "garbage":
        path.write_bytes(b"not a pickle")
    elif case == "foreign":
        torch.save({"model": {"features.0.weight": torch.zeros(3)}}, path)
    elif case != "missing":
        torch.save({"model": original_state()}, path)
    if case == "wrong_space":
        space[0] = "space.embed_dims=[24,48]"
    elif case == "shallow_space":
        space[1] = "space.depths=[1,2]"
    elif case == "classes":
        space.append("space.num_classes=10")
    out = tmp_path / "run"
    assert cli(["convert", str(path), "--out", str(out), *sets(space)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()
