"""MiniViT: multiplexed blocks against timm's own networks, the registered models' sizes, the relation
losses against hand computations, and a Mini-Swin student distilled and exported through the CLI."""

from __future__ import annotations

import copy
import json

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import sets
from safetensors.torch import load_file
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from cream.cli import main
from cream.config import RunConfig, load_config
from cream.data import build_splits, with_keys
from cream.nn.multiplex import Application, attend
from cream.teachers.intermediates import count_layers, record
from cream.teachers.losses import attention_relation_loss, deit_soft_loss, hidden_relation_loss, kl_loss
from cream.train.engine import Engine, seed_everything
from cream.workflows.distill import distill_strategy
from cream.workflows.train_model import configured_model

SWIN = dict(img_size=16, patch_size=2, window_size=4, embed_dim=8, num_heads=(1, 2, 2, 2), num_classes=5)


def _copy_into_timm_swin(mini: torch.nn.Module, ref: torch.nn.Module) -> None:
    """Fill `ref` (timm, every application a block of its own) from `mini`: block b of a stage takes the
    shared weights of the stage's single unique block and the norms of application b."""
    sd, new = mini.state_dict(), {}
    for key in ref.state_dict():
        parts = key.split(".")
        if parts[0] == "layers" and parts[2] == "blocks":
            prefix, b, rest = ".".join(parts[:3]), parts[3], ".".join(parts[4:])
            own = parts[4] in ("norm1", "norm2")
            new[key] = sd[f"{prefix}.0.apps.{b}.{rest}" if own else f"{prefix}.0.block.{rest}"]
        else:
            new[key] = sd[key]
    ref.load_state_dict(new)


def test_mini_swin_without_transforms_is_timm_swin_with_tied_blocks():
    """Two applications of one block per stage, shift alternating, equal timm's Swin whose two blocks
    per stage hold the same shared weights and the applications' own norms."""
    torch.manual_seed(0)
    mini = timm.create_model("mini_swin_tiny_patch4_window7_224", depths=(2, 2, 2, 2), shared=(1, 1, 1, 1),
                             head_mix=False, local_ffn=False, mask_unshifted=False, **SWIN).eval()
    ref = SwinTransformer(depths=(2, 2, 2, 2), **SWIN).eval()
    _copy_into_timm_swin(mini, ref)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(mini(x), ref(x), atol=1e-6)
    assert ref.layers[0].blocks[1].shift_size == (2, 2)  # the second application was a shifted one
    tied = sum(p.numel() for p in ref.parameters()) - sum(p.numel() for p in mini.parameters())
    assert tied > 0  # the second block's qkv, proj, MLP and rel-pos table exist once in the Mini model
    # the original's mask in the unshifted applications changes the first stage's windows
    mini.layers[0].blocks[0].mask_unshifted = True
    assert not torch.allclose(mini(x), ref(x), atol=1e-4)


def test_mini_deit_without_transforms_is_timm_vit_with_tied_blocks():
    torch.manual_seed(0)
    kw = dict(img_size=16, patch_size=4, embed_dim=12, num_heads=2, num_classes=5)
    mini = timm.create_model("mini_deit_tiny_patch16_224", depth=4, head_mix=False, rpe=False, **kw).eval()
    ref = VisionTransformer(depth=4, qkv_bias=True, class_token=False, global_pool="avg", fc_norm=False, **kw).eval()
    _copy_into_timm_vit(mini, ref)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(mini(x), ref(x), atol=1e-5)


def _copy_into_timm_vit(mini: torch.nn.Module, ref: torch.nn.Module) -> None:
    sd, new = mini.state_dict(), {}
    for key in ref.state_dict():
        parts = key.split(".")
        if parts[0] != "blocks":
            new[key] = sd[key]
            continue
        unique, app, rest = int(parts[1]) // 2, int(parts[1]) % 2, ".".join(parts[2:])
        own = parts[2] in ("norm1", "norm2")
        new[key] = sd[f"blocks.{unique}.apps.{app}.{rest}" if own else f"blocks.{unique}.block.{rest}"]
    ref.load_state_dict(new)


def test_attention_transforms_against_a_hand_computation():
    """Swin: logits + rel-pos bias -> Linear mix (with bias) -> + mask -> softmax -> Linear mix -> @ v.
    DeiT: logits + iRPE on keys -> bias-free 1x1 conv mix -> softmax -> conv mix -> @ v."""
    torch.manual_seed(0)
    swin = timm.create_model("mini_swin_tiny_patch4_window7_224", **SWIN)
    block = swin.layers[0].blocks[0]
    attn, app = block.block.attn, block.apps[1]
    for m in (app.mix_pre, app.mix_post):
        torch.nn.init.normal_(m.bias)
    x = torch.randn(2 * 4, 16, 8)
    mask = block.shift_mask
    bias = attn._get_rel_pos_bias()
    q, k, v = attn.qkv(x).reshape(8, 16, 3, 1, 8).permute(2, 0, 3, 1, 4)
    a = (q * 8**-0.5) @ k.transpose(-2, -1) + bias
    a = torch.einsum("bhij,gh->bgij", a, app.mix_pre.weight) + app.mix_pre.bias[:, None, None]
    a = (a.view(2, 4, 1, 16, 16) + mask[None, :, None]).view(8, 1, 16, 16).softmax(-1)
    a = torch.einsum("bhij,gh->bgij", a, app.mix_post.weight) + app.mix_post.bias[:, None, None]
    want = attn.proj((a @ v).transpose(1, 2).reshape(8, 16, 8))
    assert torch.allclose(attend(attn, x, app, bias=bias, mask=mask), want, atol=1e-5)

    deit = timm.create_model("mini_deit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=12, num_heads=2)
    block = deit.blocks[0]
    attn, app = block.block.attn, block.apps[0]
    torch.nn.init.normal_(app.rpe.table_k)
    x = torch.randn(2, 16, 12)
    q, k, v = attn.qkv(x).reshape(2, 16, 3, 2, 6).permute(2, 0, 3, 1, 4)
    q = q * 6**-0.5
    ids = app.rpe.ids(4, 4, 16, x.device)[0]
    a = q @ k.transpose(-2, -1) + torch.einsum("bhid,ijd->bhij", q, app.rpe.table_k[0][ids])
    a = torch.einsum("bhij,gh->bgij", a, app.mix_pre.weight[:, :, 0, 0]).softmax(-1)
    a = torch.einsum("bhij,gh->bgij", a, app.mix_post.weight[:, :, 0, 0])
    want = attn.proj((a @ v).transpose(1, 2).reshape(2, 16, 12))
    assert torch.allclose(attend(attn, x, app, grid=(4, 4)), want, atol=1e-5)


def test_local_ffn_transform_replaces_the_stream_then_adds_the_depthwise_conv():
    torch.manual_seed(0)
    app = Application(6, 2, norm_layer=torch.nn.LayerNorm, local_ffn=True)
    torch.nn.init.normal_(app.local_norm.bias)
    x = torch.randn(2, 4, 4, 6)
    y = F.layer_norm(x, (6,), app.local_norm.weight, app.local_norm.bias)
    conv = F.conv2d(y.permute(0, 3, 1, 2), app.local_conv.weight, app.local_conv.bias, padding=3, groups=6)
    assert torch.allclose(app.local(x, (4, 4)), y + conv.permute(0, 2, 3, 1), atol=1e-6)
    tokens = app.local(x.reshape(2, 16, 6), (4, 4))  # a ViT's (B, N, C) tokens on a 4x4 grid: the same
    assert torch.allclose(tokens, app.local(x, (4, 4)).reshape(2, 16, 6), atol=1e-6)


# name: (params, published millions); published counts are rounded to whole millions
PUBLISHED = {
    "mini_deit_tiny_patch16_224": (3_090_304, 3), "mini_deit_small_patch16_224": (11_450_824, 11),
    "mini_deit_base_patch16_224": (44_098_408, 44), "mini_deit_base_patch16_384": (44_390_248, 44),
    "mini_swin_tiny_patch4_window7_224": (12_001_765, 12), "mini_swin_small_patch4_window7_224": (26_463_205, 26),
    "mini_swin_base_patch4_window7_224": (46_444_852, 46), "mini_swin_base_patch4_window12_384": (46_512_532, 47),
}


def test_registered_models_have_the_published_sizes(monkeypatch):
    """Built on the meta device without their (slow there, and irrelevant to sizes) truncated-normal init."""
    import timm.models.swin_transformer as swin
    import timm.models.vision_transformer as vit

    for module in (torch.nn.init, swin, vit):
        monkeypatch.setattr(module, "trunc_normal_", lambda t, *args, **kwargs: t)
    for name, (exact, published) in PUBLISHED.items():
        with torch.device("meta"):
            params = sum(p.numel() for p in timm.create_model(name).parameters())
        assert params == exact and round(params / 1e6) == published, name


def test_layers_count_applications_and_record_what_the_forward_computed():
    torch.manual_seed(0)
    mini = timm.create_model("mini_swin_tiny_patch4_window7_224", **SWIN).eval()
    teacher = timm.create_model("swin_tiny_patch4_window7_224", **SWIN).eval()
    assert count_layers(mini) == count_layers(teacher) == 12  # depths 2, 2, 6, 2
    x = torch.randn(2, 3, 16, 16)
    with record(mini, [11, 0, 11]) as rec:
        out = mini(x)
    assert len(rec.hidden) == len(rec.qkv) == 3 and torch.equal(rec.hidden[2], rec.hidden[0])  # asked twice
    last = mini.norm(rec.hidden[0]).mean(1)  # the last application's output makes the logits
    assert torch.allclose(mini.head.fc(last), out, atol=1e-5)
    first = mini.layers[0].blocks[0]
    qkv = first.block.attn.qkv(first.apps[0].norm1(mini.patch_embed(x)))  # (2, 8, 8, 24): unshifted 4x4 windows
    assert rec.qkv[1][0].shape == (8, 16, 8)
    assert torch.allclose(rec.qkv[1][0][0], qkv[0, :4, :4].reshape(16, 24)[:, :8], atol=1e-6)
    with pytest.raises(Exception, match=r"names layers \[12\]; this model has layers 0..11"):
        with record(teacher, [12]):
            pass


def _relation(x, y, heads):
    b, n, c = x.shape
    xs, ys = x.view(b, n, heads, c // heads), y.view(b, n, heads, c // heads)
    return torch.einsum("bihd,bjhd->bhij", xs, ys) / (c / heads) ** 0.5


def test_relation_losses_against_hand_computations():
    g = torch.Generator().manual_seed(0)
    s = [tuple(torch.randn(3, 5, 4, generator=g) for _ in range(3)) for _ in range(2)]
    t = [tuple(torch.randn(3, 5, 6, generator=g) for _ in range(3)) for _ in range(2)]  # another width
    want = 0.0
    for sl, tl in zip(s, t, strict=True):
        for i in range(3):
            for j in range(3):
                p = _relation(tl[i], tl[j], 2).softmax(-1)
                want += float(-(p * _relation(sl[i], sl[j], 2).log_softmax(-1)).sum(-1).mean())
    assert float(attention_relation_loss(s, t, heads=2)) == pytest.approx(want / 18, rel=1e-5)
    assert float(attention_relation_loss(t, t, 1)) < float(attention_relation_loss(s, t, 1))

    hs, ht = [torch.randn(2, 7, 4, generator=g)], [torch.randn(2, 7, 9, generator=g)]
    cos_s = F.cosine_similarity(hs[0][:, :, None], hs[0][:, None], dim=-1)
    cos_t = F.cosine_similarity(ht[0][:, :, None], ht[0][:, None], dim=-1)
    assert float(hidden_relation_loss(hs, ht)) == pytest.approx(49 * float(((cos_s - cos_t) ** 2).mean()), rel=1e-5)

    z_s, z_t = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    assert float(deit_soft_loss(z_s, z_t, 1.0)) == pytest.approx(float(kl_loss(z_s, z_t, 1.0)) / 10, rel=1e-5)


STUDENT = dict(img_size=16, patch_size=2, window_size=4, embed_dim=8, num_heads=[1, 2, 2, 2])
TEACHER = dict(STUDENT, embed_dim=12)
RELATIONS = ["distill.teacher.kind=timm", "distill.teacher.name=swin_tiny_patch4_window7_224",
             f"distill.teacher.kwargs={json.dumps(TEACHER)}", "distill.loss=soft", "distill.alpha=1.0",
             "distill.attn_weight=1.0", "distill.hidden_weight=0.1", "distill.relation_heads=2",
             "distill.student_layers=[11,9,7,5,3,1]", "distill.teacher_layers=[11,9,7,5,3,1]"]
MINI = ["model.name=mini_swin_tiny_patch4_window7_224", f"model.kwargs={json.dumps(STUDENT)}",
        "data.image_size=16", "data.batch_size=8", "optim.sched=none", "train.epochs=1", "train.max_steps=2"]


def test_distill_step_adds_the_weighted_relation_losses():
    cfg = load_config(RunConfig, None, [*MINI, *RELATIONS])
    seed_everything(0)
    splits = build_splits(cfg.data)
    engine = Engine(cfg, configured_model(cfg, splits.num_classes), splits, None, distill_strategy(cfg, splits))
    keys, (images, targets) = next(with_keys(engine.train_loader))
    student, teacher = copy.deepcopy(engine.model), engine.strategy.teacher.model
    loss = engine.train_step(images, targets, keys)
    layers = [11, 9, 7, 5, 3, 1]
    with torch.no_grad(), record(student, layers) as s, record(teacher, layers) as t:
        out, logits = student(images), teacher(images)
    soft = -(logits.softmax(-1) * out.log_softmax(-1)).sum(-1).mean()
    attn, hidden = attention_relation_loss(s.qkv, t.qkv, 2), hidden_relation_loss(s.hidden, t.hidden)
    assert float(attn) > 0.1 and float(hidden) > 1e-3
    assert loss == pytest.approx(float(soft + attn + 0.1 * hidden), rel=1e-4)


def test_relation_losses_need_a_teacher_that_shows_its_layers():
    from types import SimpleNamespace

    from cream.errors import ConfigError
    from cream.teachers.networks import SupernetPath
    from cream.train.distill import Distill

    strategy = Distill(SupernetPath(torch.nn.Identity(), {}), attn_weight=1.0, student_layers=[0], teacher_layers=[0])
    with pytest.raises(ConfigError, match="need a teacher network that shows its layers"):
        strategy.setup(SimpleNamespace(mixup=None, device=torch.device("cpu")))


@pytest.mark.parametrize(("settings", "message"), [
    (["distill.attn_weight=1", "distill.student_layers=[1,2]", "distill.teacher_layers=[1]"],
     "'distill.student_layers' = [1, 2] and 'distill.teacher_layers' = [1] must pair layers one to one"),
    (["distill.hidden_weight=1", "distill.student_layers=[12]", "distill.teacher_layers=[1]"],
     "config key 'distill.student_layers' = [12] names layers [12]; this model has layers 0..11"),
])
def test_bad_relation_settings_are_one_line_errors(settings, message, tmp_path, capsys):
    base = [*MINI, "distill.teacher.kind=timm", "distill.teacher.name=swin_tiny_patch4_window7_224",
            f"distill.teacher.kwargs={json.dumps(TEACHER)}"]
    rc = main(["retrain", "--out", str(tmp_path / "run"), *sets([*base, *settings])])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err


def test_mini_swin_distilled_on_cifar10_through_retrain_exports_as_a_timm_model(cifar10_archive, tmp_path, capsys):
    """Acceptance 4: a Mini-Swin student learns from a Swin teacher (soft logits + attention and hidden
    relations) on real CIFAR-10 images via `cream retrain`, and `cream export` writes a timm model."""
    data = ["data.name=imagefolder", f"data.root={cifar10_archive}", "data.train_per_class=4", "data.test_per_class=2"]
    run = tmp_path / "run"
    assert main(["retrain", "--out", str(run), "--json", *sets([*MINI, *data, *RELATIONS])]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    out = tmp_path / "export" / "mini.safetensors"
    assert main(["export", str(run), "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "mini_swin_tiny_patch4_window7_224" and info["num_classes"] == 10
    model = timm.create_model(info["model"], num_classes=info["num_classes"], **info["model_kwargs"]).eval()
    model.load_state_dict(load_file(str(out)))
    trained = timm.create_model(info["model"], num_classes=10, **STUDENT).eval()
    trained.load_state_dict(load_file(str(run / "model.safetensors")))
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(model(x), trained(x))
    assert not torch.equal(model(x), timm.create_model(info["model"], num_classes=10, **STUDENT).eval()(x))
