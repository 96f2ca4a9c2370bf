"""iBOT and its DINOv2 recipe: each pure loss against a loop reference and its invariants, the schedule, the heads, the
module's loss against one built from the encoder and heads, one step + after_step (centres, EMA), the masked content
never reaching the student, and both recipes on tiny images and on text (a domain that corrupts in place)."""
import math
from importlib import resources

import numpy as np
import pytest
import torch
import yaml

from multissl.contracts import compatible
from multissl.data import Collate, Views
from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder, MLPEncoder
from multissl.errors import UserError
from multissl.objectives.dino import dino_loss
from multissl.objectives.ibot import IBOT
from multissl.objectives.ibot_losses import (centred_targets, cls_loss, entropy, koleo_loss, patch_loss,
                                             sinkhorn_targets)


# ---- references --------------------------------------------------------------------------------------------------
def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def reference_cls(student, targets, student_temp):
    """Teacher view i against every student view j != i: per sample -sum_k q[k] log p[k]; mean over samples, pairs."""
    terms = []
    for i, q in enumerate(targets):
        for j, s in enumerate(student):
            if j != i:
                log_p = np_log_softmax(np.asarray(s, np.float64) / student_temp)
                terms.append(np.mean([-(q[b] * log_p[b]).sum() for b in range(len(q))]))
    return float(np.mean(terms))


def reference_patch(student, targets, masked, student_temp):
    """Per view, per sample: the mean cross-entropy over its masked tokens (0 without any); mean over samples, views."""
    views = []
    for s, q, m in zip(student, targets, masked):
        samples = []
        for b in range(len(m)):
            ces = [-(q[b, j] * np_log_softmax(np.asarray(s[b, j], np.float64) / student_temp)).sum()
                   for j in range(m.shape[1]) if m[b, j] >= 0]
            samples.append(np.mean(ces) if ces else 0.0)
        views.append(np.mean(samples))
    return float(np.mean(views))


def reference_sinkhorn(logits, temp, iterations):
    """DINOv2's teacher Sinkhorn-Knopp in its own notation: Q [K B] = exp(t / temp)^T summing to 1, then per round
    every prototype (row) to 1/K and every sample (column) to 1/B; finally B Q^T (each sample sums to 1)."""
    q = np.exp(np.asarray(logits, np.float64) / temp).T
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(1, keepdims=True) / k
        q = q / q.sum(0, keepdims=True) / b
    return (q * b).T


def reference_koleo(x, eps=1e-8):
    """For each unit row the Euclidean distance to its nearest other row, by plain loops; -mean log(distance)."""
    x = [np.asarray(r, np.float64) / np.linalg.norm(r) for r in np.asarray(x, np.float64)]
    nearest = [min(np.linalg.norm(xi - xj) for j, xj in enumerate(x) if j != i) for i, xi in enumerate(x)]
    return float(-np.mean(np.log(np.asarray(nearest) + eps)))


def logits(n_views, shape, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(n_views)]


def with_padding(masked, seed):
    """masked [b m] with a random tail of every row set to -1, one row emptied: variable counts, one sample without."""
    g, out = torch.Generator().manual_seed(seed), masked.clone()
    for b in range(len(out)):
        out[b, 0 if b == 0 else int(torch.randint(1, out.shape[1] + 1, (), generator=g)):] = -1
    return out


# ---- pure losses ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_views,b,k", [(2, 1, 3), (2, 5, 8), (6, 3, 16)])
def test_cls_loss_matches_reference_and_is_dinos_with_centred_targets(n_views, b, k):
    student, teacher = logits(n_views, (b, k), seed=n_views + k), logits(2, (b, k), seed=b)
    center = torch.randn(k, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    targets = [centred_targets(t, center, 0.05) for t in teacher]
    got = cls_loss(student, targets, 0.1).item()
    assert got == pytest.approx(reference_cls([s.numpy() for s in student], [q.numpy() for q in targets], 0.1),
                                rel=1e-10)
    assert got == pytest.approx(dino_loss(student, teacher, center, 0.05, 0.1).item(), rel=1e-12)


@pytest.mark.parametrize("b,m,k", [(1, 1, 4), (4, 5, 8), (3, 7, 6)])
def test_patch_loss_matches_reference_with_padding_and_empty_samples(b, m, k):
    student, teacher = logits(2, (b, m, k), seed=m), logits(2, (b, m, k), seed=k)
    masked = [torch.arange(m).repeat(b, 1), with_padding(torch.arange(m).repeat(b, 1), seed=b)]
    targets = [centred_targets(t, torch.zeros(k, dtype=torch.float64), 0.07) for t in teacher]
    got = patch_loss(student, targets, masked, 0.1).item()
    ref = reference_patch([s.numpy() for s in student], [q.numpy() for q in targets], [x.numpy() for x in masked], 0.1)
    assert got == pytest.approx(ref, rel=1e-10)
    # what sits at a padded position is never scored
    noisy = [s.clone() for s in student]
    noisy[1][masked[1] < 0] = 1e3
    assert patch_loss(noisy, targets, masked, 0.1).item() == pytest.approx(got, rel=1e-12)
    # the gradient reaches the student, never the targets (a graph the loss must cut)
    student, teacher = [x.requires_grad_() for x in student], [x.requires_grad_() for x in teacher]
    patch_loss(student, [torch.softmax(t, -1) for t in teacher], masked).backward()
    assert student[0].grad.abs().sum() > 0 and all(t.grad is None for t in teacher)


def test_teacher_equal_to_student_at_equal_temperatures_gives_the_entropy():
    """Cross-entropy = entropy + KL: targets softmax(s / T) of the student's own logits at T = student_temp leave the
    entropy alone, for the tokens (equal counts per sample) and for the pooled output (all views alike)."""
    s = logits(1, (4, 6, 10), seed=3)[0]
    q = centred_targets(s, torch.zeros(10, dtype=torch.float64), 0.1)
    masked = torch.arange(6).repeat(4, 1)
    assert patch_loss([s, s], [q, q], [masked, masked], 0.1).item() == pytest.approx(entropy(q).item(), rel=1e-10)
    c = s[:, 0]
    qc = centred_targets(c, torch.zeros(10, dtype=torch.float64), 0.1)
    assert cls_loss([c] * 4, [qc] * 2, 0.1).item() == pytest.approx(entropy(qc).item(), rel=1e-10)
    # anything else costs more; uniform targets of a constant teacher cost log K against a constant student
    other = logits(1, (4, 6, 10), seed=4)[0]
    assert patch_loss([other, other], [q, q], [masked, masked], 0.1).item() > entropy(q).item()
    const = torch.full((4, 10), 0.3, dtype=torch.float64)
    uniform = centred_targets(const, const[0], 0.04)
    assert cls_loss([const] * 3, [uniform] * 2).item() == pytest.approx(math.log(10), abs=1e-12)


@pytest.mark.parametrize("b,k,temp", [(6, 4, 0.05), (5, 12, 0.07), (40, 8, 0.04)])
def test_sinkhorn_matches_dinov2_reference_and_spreads_the_batch(b, k, temp):
    t = torch.tanh(logits(1, (b, k), seed=b * k)[0])  # cosine-like teacher outputs
    got = sinkhorn_targets(t, temp, 3)
    np.testing.assert_allclose(got.numpy(), reference_sinkhorn(t.numpy(), temp, 3), rtol=1e-9, atol=1e-12)
    # marginals: every sample an assignment (rows sum to 1, exactly after the last step); with enough rounds every
    # prototype holds b / k of the mass
    torch.testing.assert_close(got.sum(1), torch.ones(b, dtype=torch.float64), rtol=0, atol=1e-12)
    many = sinkhorn_targets(t, temp, 500)
    torch.testing.assert_close(many.sum(0), torch.full((k,), b / k, dtype=torch.float64), rtol=1e-6, atol=0)
    assert got.min() >= 0 and sinkhorn_targets(t[:0], temp).shape == (0, k)


@pytest.mark.parametrize("b,d", [(2, 3), (7, 5), (16, 4)])
def test_koleo_matches_reference(b, d):
    x = logits(1, (b, d), seed=b + d)[0]
    assert koleo_loss(x).item() == pytest.approx(reference_koleo(x.numpy()), rel=1e-7)
    assert koleo_loss(3.0 * x).item() == pytest.approx(koleo_loss(x).item(), rel=1e-12)  # rows are normalised


@pytest.mark.parametrize("n", [2, 3, 5])
def test_koleo_of_a_regular_simplex(n):
    """n unit vectors at the vertices of a regular simplex are all sqrt(2 n / (n - 1)) apart; the basis vectors
    e_1..e_n (another regular simplex) sqrt(2)."""
    centred = torch.eye(n, dtype=torch.float64) - 1.0 / n  # vertices around the origin, in an (n-1)-dim subspace
    assert koleo_loss(centred).item() == pytest.approx(-math.log(math.sqrt(2 * n / (n - 1))), abs=1e-7)
    assert koleo_loss(torch.eye(n, 6, dtype=torch.float64)).item() == pytest.approx(-math.log(math.sqrt(2)), abs=1e-7)
    # pushing apart lowers it: a duplicate point sits at distance 0 (a huge loss) with a finite gradient
    dup = torch.cat([centred, centred[:1]]).requires_grad_()
    loss = koleo_loss(dup)
    loss.backward()
    assert loss.item() > 5 and torch.isfinite(dup.grad).all()


# ---- the module ------------------------------------------------------------------------------------------------
def tiny_setup(seed=0, **kw):
    torch.manual_seed(seed)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    obj = IBOT(enc, d, **({"projector": (32, 32, 8), "out_dim": 24, "patch_out_dim": 20} | kw))
    return d, enc, obj


def tiny_batch(d, n=6, local=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 1, 8, 8, generator=g) for _ in range(2)]
    views += [torch.randn(n, 1, 4, 4, generator=g) for _ in range(local)]
    masked = torch.cat([d.mask(n, g)[1] for _ in range(2)])  # [2n m], view-major
    return {"views": views, "masked": masked, "y": torch.zeros(n, dtype=torch.long)}


def sched(step, total=100, ema=0.9):
    return {"step": step, "total_steps": total, "progress": step / total, "ema": ema, "lr": 1e-3, "wd": 0.05}


def recipe(name):
    cfg = yaml.safe_load((resources.files("multissl.configs") / "objective" / f"{name}.yaml").read_text())
    assert cfg.pop("_target_") == "multissl.objectives.ibot.IBOT"
    return cfg


def reference_module_loss(enc, obj, batch, step):
    """Each view through the encoder alone; the student's global view i with its mask's tokens replaced by the mask
    token, its head at those tokens; the teacher on the clean views, centred and sharpened; numpy loop losses."""
    n, views = len(batch["y"]), batch["views"]
    masks = batch["masked"].split(n)
    temp, temp2 = obj.temperature(sched(step))
    patch_head = obj.patch_head or obj.head
    with torch.no_grad():
        s_tok, s_pool = zip(*[enc(v, masked=m, mask_token=obj.mask_token) for v, m in zip(views[:2], masks)])
        s_cls = [obj.head(p) for p in s_pool] + [obj.head(enc(v)[1]) for v in views[2:]]
        s_patch = [patch_head(t[torch.arange(n)[:, None], m]) for t, m in zip(s_tok, masks)]
        t_enc, t_head, *rest = obj.teacher.nets
        t_tok, t_pool = zip(*[t_enc(v) for v in views[:2]])
        t_cls = [t_head(p) for p in t_pool]
        t_patch = [(rest[0] if rest else t_head)(t[torch.arange(n)[:, None], m]) for t, m in zip(t_tok, masks)]
    q_cls = [np.exp(np_log_softmax((t.double() - obj.center.double()).numpy() / temp)) for t in t_cls]
    q_patch = [np.exp(np_log_softmax((t.double() - obj.center2.double()).numpy() / temp2)) for t in t_patch]
    cls = reference_cls([s.double().numpy() for s in s_cls], q_cls, obj.student_temp)
    patch = reference_patch([s.double().numpy() for s in s_patch], q_patch, [m.numpy() for m in masks], obj.student_temp)
    return obj.lambda1 * cls + obj.lambda2 * patch, cls, patch


@pytest.mark.parametrize("local,shared", [(0, True), (3, True), (2, False)])
def test_module_loss_matches_reference(local, shared):
    d, enc, obj = tiny_setup(shared_head=shared, lambda2=0.5)
    with torch.no_grad():
        obj.center.normal_(std=0.1), obj.center2.normal_(std=0.1)
    batch = tiny_batch(d, local=local)
    loss, logs = obj(enc, batch, sched(20))
    total, cls, patch = reference_module_loss(enc, obj, batch, 20)
    got = [logs["cls_loss"].item(), logs["patch_loss"].item(), loss.item()]
    assert got == pytest.approx([cls, patch, total], rel=1e-5)
    assert {"rep", "cls_loss", "patch_loss", "teacher_entropy", "patch_entropy"} <= logs.keys()
    assert "koleo" not in logs and logs["rep"].shape == (6, 16) and not logs["rep"].requires_grad
    assert 0 <= logs["teacher_entropy"].item() <= math.log(24) + 1e-5
    assert 0 <= logs["patch_entropy"].item() <= math.log(24 if shared else 20) + 1e-5
    loss.backward()
    student = [*enc.parameters(), obj.mask_token, *[p for h in obj.heads() for p in h.parameters() if p.requires_grad]]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student)
    assert all(p.grad is None for p in obj.teacher.parameters())


def test_masked_content_never_reaches_the_student():
    d, enc, obj = tiny_setup()
    batch = tiny_batch(d, n=4)
    masks = batch["masked"].split(4)
    perturbed = {**batch, "views": [v.clone() for v in batch["views"]]}
    for v, m in zip(perturbed["views"], masks):  # patch p of an 8 x 8 image with 2 x 2 patches: row p // 4, col p % 4
        for b in range(len(v)):
            for p in m[b].tolist():
                r, c = divmod(p, 4)
                v[b, :, 2 * r:2 * r + 2, 2 * c:2 * c + 2] += 100.0 * torch.randn(1, 2, 2)
    with torch.no_grad():
        a, b_ = obj.student(enc, batch), obj.student(enc, perturbed)
        for key in ("cls", "patch", "pooled"):
            assert all(torch.equal(x, y) for x, y in zip(a[key], b_[key])), key
        # a visible patch does reach it (the check above is not vacuous)
        visible = next(p for p in range(16) if p not in masks[0][0].tolist())
        r, c = divmod(visible, 4)
        perturbed["views"][0][0, :, 2 * r:2 * r + 2, 2 * c:2 * c + 2] += 1.0
        assert not torch.equal(a["pooled"][0], obj.student(enc, perturbed)["pooled"][0])
        # the teacher reads the clean views: its targets change with the masked content
        assert not torch.equal(*(obj.targets(x, a["masks"], (0.04, 0.07), 0)[1][0] for x in (batch, perturbed)))


def test_heads_shared_or_separate_and_last_layers_frozen_at_first():
    _, enc, shared = tiny_setup()
    assert shared.patch_head is None and len(shared.teacher.nets) == 2 and shared.center2.shape == (24,)
    d, enc, sep = tiny_setup(shared_head=False, norm_last_layer=False, freeze_last_layer=3)
    assert len(sep.teacher.nets) == 3 and sep.center2.shape == (20,) and sep.patch_head.last.weight.shape == (20, 8)
    assert sep.head.last_g is not None and sep.patch_head.last_g is not None  # a learnt output scale (DINOv2's)
    assert sep.mask_token.shape == (16,) and 0 < sep.mask_token.std() < 0.1 and sep.projector is sep.head.mlp
    for step, trains in ((2, False), (3, True)):
        loss, _ = sep(enc, tiny_batch(d), sched(step))
        loss.backward()
        last = [p for h in sep.heads() for p in h.last_layer()]
        assert all((p.grad is not None) == trains for p in last)
        for p in [*enc.parameters(), *sep.parameters()]:
            p.grad = None


def test_one_optimizer_step_and_after_step_match_reference():
    """Centres: m * c + (1 - m) * the mean teacher output, of the pooled head over both clean global views, of the
    token head over every token of both (per sample, then over samples and views); the teacher: EMA of the student
    after the optimizer step. Both move only in after_step."""
    d, enc, obj = tiny_setup(shared_head=False, center_momentum=0.8, center_momentum2=0.6, momentum=None)
    with torch.no_grad():
        obj.center.normal_(), obj.center2.normal_()
    batch, s = tiny_batch(d, n=5, local=2), sched(10, ema=0.7)
    c0, c20 = obj.center.clone(), obj.center2.clone()
    with torch.no_grad():
        t_enc, t_head, t_patch = obj.teacher.nets
        t_cls = torch.cat([t_head(t_enc(v)[1]) for v in batch["views"][:2]]).double()  # [2b K]
        t_tok = torch.cat([t_patch(t_enc(v)[0]) for v in batch["views"][:2]]).double()  # [2b n K2]
    teacher0 = [p.detach().double().clone() for p in obj.teacher.parameters()]
    opt = torch.optim.SGD([*enc.parameters(), obj.mask_token, *obj.head.parameters(), *obj.patch_head.parameters()],
                          lr=0.5)
    loss, _ = obj(enc, batch, s)
    loss.backward()
    opt.step()
    assert torch.equal(obj.center, c0) and torch.equal(obj.center2, c20)
    student = [p.detach().double().clone() for p in [*enc.parameters(), *obj.head.parameters(),
                                                     *obj.patch_head.parameters()]]
    obj.after_step(enc, s)
    torch.testing.assert_close(obj.center.double(), 0.8 * c0.double() + 0.2 * t_cls.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(obj.center2.double(), 0.6 * c20.double() + 0.4 * t_tok.mean((0, 1)), rtol=1e-5,
                               atol=1e-6)
    for new, old, st in zip(obj.teacher.parameters(), teacher0, student, strict=True):
        torch.testing.assert_close(new.double(), 0.7 * old + 0.3 * st, rtol=1e-5, atol=1e-6)


def test_skipped_step_and_sinkhorn_leave_the_centres_and_state_is_buffers():
    d, enc, obj = tiny_setup()
    obj(enc, tiny_batch(d, seed=1), sched(3))  # step 3 skipped: no after_step
    c0, c20 = obj.center.clone(), obj.center2.clone()
    obj.after_step(enc, sched(4))
    assert torch.equal(obj.center, c0) and torch.equal(obj.center2, c20)
    assert {"center", "center2", "mask_token"} <= set(obj.state_dict())
    _, enc, sk = tiny_setup(centering="sinkhorn")
    sk(enc, tiny_batch(d), sched(5))
    sk.after_step(enc, sched(5))
    assert not sk.center.any() and not sk.center2.any()  # Sinkhorn-Knopp needs no running centre


def test_temperatures_declarations_and_refusals():
    _, _, obj = tiny_setup(teacher_temp=0.07, warmup_teacher_temp=0.04, teacher_temp2=0.06,
                           warmup_teacher_temp2=0.02, teacher_temp_warmup=0.3)  # linear warm-ups, then constant
    got = [obj.temperature(sched(s, total=100)) for s in (0, 15, 30, 99)]
    np.testing.assert_allclose(got, [(0.04, 0.02), (0.055, 0.04), (0.07, 0.06), (0.07, 0.06)], atol=1e-12)
    d, _, obj = tiny_setup(teacher_temp_warmup=0.0)
    assert obj.temperature(sched(0)) == pytest.approx((0.04, 0.07))
    assert IBOT.mask_tokens and IBOT.masked_views == 2 and IBOT.corrupt_view and IBOT.needs_token_encoder
    assert not obj.batch_statistics and obj.collapse_hint
    assert tiny_setup(centering="sinkhorn")[2].batch_statistics and tiny_setup(koleo_weight=0.1)[2].batch_statistics
    assert compatible(d, IBOT, Encoder) is None
    assert "mask" in compatible(d, IBOT, MLPEncoder)
    with pytest.raises(UserError, match="centering"):
        tiny_setup(centering="mean")


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_both_recipes_train_on_tiny_images(name):
    cfg = recipe(name)
    d, enc, obj = tiny_setup(**cfg)
    batch = tiny_batch(d, n=8, local=2)
    loss, logs = obj(enc, batch, sched(10))
    assert torch.isfinite(loss) and all(math.isfinite(float(v)) for k, v in logs.items() if k != "rep")
    if name == "dinov2":
        assert obj.patch_head is not None and obj.centering == "sinkhorn" and obj.head.last_g is not None
        assert logs["koleo"].item() == pytest.approx(sum(koleo_loss(p) for p in obj.student(enc, batch)["pooled"])
                                                     .item(), rel=1e-5)
        assert loss.item() == pytest.approx((logs["cls_loss"] + logs["patch_loss"] + 0.1 * logs["koleo"]).item(),
                                            rel=1e-5)
    loss.backward()
    assert enc.embed.proj.weight.grad.abs().sum() > 0 and obj.mask_token.grad.abs().sum() > 0
    obj.after_step(enc, sched(10))
    online, target = obj.branches(enc, {"views": batch["views"][:1]})
    assert online.shape == target.shape == (8, cfg["out_dim"])
    torch.testing.assert_close(target.sum(1), torch.ones(8), rtol=0, atol=1e-5)


LINES = [f"{w} number {i} is {'odd' if i % 2 else 'even'} and {w}s like it" for i, w in
         enumerate(["cat", "dog", "bird", "fish", "frog", "mouse", "horse", "sheep"] * 4)]


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    from multissl.domains.text import TextDomain
    root = tmp_path_factory.mktemp("text")
    (root / "lines.txt").write_text("\n".join(LINES), encoding="utf-8")
    d = TextDomain(vocab_size=120, cache_dir=str(root / "cache"), data={"path": str(root / "lines.txt")})
    items = [Views(d.dataset("train"), d, 0, 2, corrupt=True, n_masks=2)[k] for k in range(6)]
    return d, Collate(d)(items)


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_both_recipes_on_text_a_domain_that_corrupts_in_place(text, name):
    d, batch = text
    assert len(batch["masked"]) == 6 and "clean" in batch  # one mask, for the corrupted view 0
    torch.manual_seed(0)
    enc = Encoder(d, dim=16, depth=1, heads=2)
    obj = IBOT(enc, d, **(recipe(name) | {"projector": (32, 32, 8), "out_dim": 24, "patch_out_dim": 20}))
    assert obj.mask_token is None  # the input carries its own [MASK] ids
    loss, _ = obj(enc, batch, sched(10))
    assert torch.isfinite(loss) and len(obj.student(enc, batch)["patch"]) == 1  # the token loss covers view 0
    if name == "ibot":  # the token centre: per sample the mean over its real tokens, then over samples and views
        t_enc, t_head = obj.teacher.nets
        with torch.no_grad():
            outs = [t_head(t_enc(x, pad=p)[0]) for x, p in zip([batch["clean"], batch["views"][1]], batch["pad"])]
        ref = torch.stack([torch.stack([o[i][~p[i]].mean(0) for i in range(6)]).mean(0)
                           for o, p in zip(outs, batch["pad"])]).mean(0)
        torch.testing.assert_close(obj.pending[-1][2], ref, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert enc.embed.tokens.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for h in obj.heads() for p in h.mlp.parameters())
    # the teacher reads the clean view 0: given the corrupted one instead, its targets change
    masks = obj.student(enc, batch)["masks"]
    clean = obj.targets(batch, masks, (0.04, 0.07), 10)[1][0]
    corrupted = obj.targets({**batch, "clean": batch["views"][0]}, masks, (0.04, 0.07), 10)[1][0]
    assert not torch.allclose(clean, corrupted)
    obj.after_step(enc, sched(10))


def test_sinkhorn_targets_span_both_global_views_and_every_masked_token():
    """DINOv2's centring: one Sinkhorn-Knopp over the pooled outputs of both clean views, one over the masked tokens
    of both, at the scheduled temperatures."""
    d, _, obj = tiny_setup(centering="sinkhorn", shared_head=False)
    batch = tiny_batch(d, n=5)
    masks = list(batch["masked"].split(5))
    q_cls, q_patch = obj.targets(batch, masks, (0.05, 0.06), 0)
    with torch.no_grad():
        t_enc, t_head, t_patch = obj.teacher.nets
        out = [t_enc(v) for v in batch["views"][:2]]
        t_cls = torch.cat([t_head(p) for _, p in out])
        t_tok = torch.cat([t_patch(t[torch.arange(5)[:, None], m]) for (t, _), m in zip(out, masks)])  # [2b m K2]
    np.testing.assert_allclose(torch.cat(q_cls).double().numpy(), reference_sinkhorn(t_cls.numpy(), 0.05, 3),
                               rtol=1e-5, atol=1e-7)
    ref = reference_sinkhorn(t_tok.reshape(-1, 20).numpy(), 0.06, 3).reshape(t_tok.shape)
    np.testing.assert_allclose(torch.cat(q_patch).double().numpy(), ref, rtol=1e-5, atol=1e-7)
