"""CPC: the loss and its accuracies against plain loops, its invariants (a perfect predictor, identical latents,
padding), the domains' `steps` on tiny domains through their real embedders (shape and order), and the module on a
tiny image domain (each step encoded alone), a text-like domain (padding never scored) and rl (episodes)."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from multissl.contracts import compatible
from multissl.domains.audio import AudioDomain
from multissl.domains.image import ImageDomain
from multissl.domains.tabular import TabularDomain
from multissl.domains.text import TextDomain
from multissl.domains.text.domain import TokenEmbed
from multissl.domains.video import VideoDomain
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.objectives.cpc import CPC, cpc_loss


# ---- independent reference (pure python loops) ----------------------------------------------------------------
def ref_cpc(pred, z, valid):
    """For each offset k: each (sample i, step t) with t and t+k valid scores p[i,t,k] . z[j,t+k] for every j valid
    at t+k; -log softmax of its own. The loss: the mean over offsets (with a term) of each offset's mean."""
    p, zz, v = pred.tolist(), z.tolist(), valid.tolist()
    n, steps, k_max = len(p), len(p[0]), len(p[0][0])
    losses, accs = [], []
    for k in range(1, k_max + 1):
        terms, hits = [], []
        for t in range(steps - k):
            for i in range(n):
                if not (v[i][t] and v[i][t + k]):
                    continue
                cands = [j for j in range(n) if v[j][t + k]]
                s = {j: sum(a * b for a, b in zip(p[i][t][k - 1], zz[j][t + k])) for j in cands}
                top = max(s.values())
                terms.append(top + math.log(sum(math.exp(x - top) for x in s.values())) - s[i])
                hits.append(max(cands, key=lambda j: s[j]) == i)
        if terms:
            losses.append(sum(terms) / len(terms))
        accs.append(sum(hits) / len(hits) if hits else 0.0)
    return (sum(losses) / len(losses) if losses else 0.0), accs


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


# ---- the loss ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, steps, k, d", [(2, 2, 1, 3), (5, 4, 3, 4), (6, 6, 2, 5), (3, 3, 4, 2)])
@pytest.mark.parametrize("padded", [False, True])
def test_loss_and_accuracy_match_reference(n, steps, k, d, padded):
    pred, z = rand(n, steps, k, d, seed=n + steps), rand(n, steps, d, seed=n * steps)
    valid = torch.ones(n, steps, dtype=torch.bool)
    if padded:  # samples of different lengths, as a text batch (k=4 > steps-1: offsets with no pair at all)
        valid[0, 1:] = False
        valid[-1, steps - 1:] = False
    loss, acc = cpc_loss(pred, z, valid)
    ref, ref_acc = ref_cpc(pred, z, valid)
    assert loss.item() == pytest.approx(ref, rel=1e-10, abs=1e-12)
    assert acc.tolist() == pytest.approx(ref_acc, abs=1e-6)  # logged in float32


def test_a_perfect_predictor_of_separated_latents_scores_zero_and_identical_latents_log_candidates():
    n, steps, k = 4, 5, 3
    z = torch.eye(n * steps, dtype=torch.float64).view(n, steps, n * steps) * 30  # every latent its own direction
    pred = z.new_zeros(n, steps, k, n * steps)
    for t in range(steps):
        for j in range(1, min(k, steps - 1 - t) + 1):
            pred[:, t, j - 1] = z[:, t + j]  # W_j c_t lands on its target exactly
    loss, acc = cpc_loss(pred, z, torch.ones(n, steps, dtype=torch.bool))
    assert loss.item() < 1e-12 and acc.tolist() == [1.0] * k
    same = torch.ones(n, steps, 6, dtype=torch.float64)
    loss, _ = cpc_loss(same.unsqueeze(2).expand(-1, -1, k, -1) * 0.7, same, torch.ones(n, steps, dtype=torch.bool))
    assert loss.item() == pytest.approx(math.log(n), rel=1e-12)  # chance among the n samples at the target step
    valid = torch.ones(n, steps, dtype=torch.bool)
    valid[0, 2:] = False  # fewer candidates where sample 0 has ended: each term is log of the count at its step
    loss, _ = cpc_loss(same.unsqueeze(2).expand(-1, -1, k, -1), same, valid)
    assert loss.item() == pytest.approx(ref_cpc(same.unsqueeze(2).expand(-1, -1, k, -1), same, valid)[0], rel=1e-12)
    assert math.log(n - 1) < loss.item() < math.log(n)


def test_padded_steps_are_never_contexts_nor_targets():
    n, steps, k, d = 5, 6, 2, 4
    pred = rand(n, steps, k, d, seed=1).requires_grad_()
    z = rand(n, steps, d, seed=2).requires_grad_()
    valid = torch.ones(n, steps, dtype=torch.bool)
    valid[1, 3:], valid[4, 1:] = False, False
    loss, _ = cpc_loss(pred, z, valid)
    loss.backward()
    assert (pred.grad[~valid] == 0).all() and (z.grad[~valid] == 0).all()
    assert (z.grad[:, 1:][valid[:, 1:]].abs().sum(-1) > 0).all()  # every real step after the first is a target
    moved_p, moved_z = pred.detach().clone(), z.detach().clone()
    moved_p[~valid], moved_z[~valid] = 1e3, -1e3
    assert cpc_loss(moved_p, moved_z, valid)[0].item() == pytest.approx(loss.item(), rel=1e-12)


# ---- the domains' steps --------------------------------------------------------------------------------------------
def summing(embedder):
    """The domain's own embedder with every token the sum of its pixels (no positions): steps can be read off."""
    with torch.no_grad():
        embedder.proj.weight.fill_(1.0)
        embedder.proj.bias.zero_()
        embedder.pos.zero_()
    return embedder


def test_image_steps_are_its_rows_of_patches_top_first():
    d = ImageDomain(image_size=8, channels=1, patch_size=2)  # 4 x 4 patches
    emb = summing(d.embedder(3))
    rows = torch.arange(8.0).view(1, 1, 8, 1).expand(2, 1, 8, 8)  # pixel row r holds r
    steps, pad = d.steps(emb(rows), None)
    assert steps.shape == (2, 4, 3) and pad is None
    # patch row R sums its 2 x 2 pixels of rows 2R and 2R + 1
    assert torch.allclose(steps, (8 * torch.arange(4.0) + 2).view(1, 4, 1).expand(2, 4, 3))
    cols, _ = d.steps(emb(rows.transpose(2, 3)), None)  # columns differ: each row's mean is the same
    assert torch.allclose(cols, cols[:, :1].expand_as(cols))
    assert d.steps(torch.zeros(1, 4, 5), None)[0].shape == (1, 2, 5)  # a local view's smaller square grid


def test_audio_steps_are_its_time_columns_first_first():
    d = AudioDomain(clip_seconds=0.1, n_mels=8, patch_size=(4, 2), pos_embed="learned")  # grid [2 mel, 5 time]
    assert d.grid == (2, 5)
    emb = summing(d.embedder(3))
    time = torch.arange(10.0).view(1, 1, 1, 10).expand(2, 1, 8, 10)  # frame f holds f
    steps, pad = d.steps(emb(time), None)
    assert steps.shape == (2, 5, 3) and pad is None
    assert torch.allclose(steps, (16 * torch.arange(5.0) + 4).view(1, 5, 1).expand(2, 5, 3))  # 4 bins x frames 2c, 2c+1
    freq, _ = d.steps(emb(torch.arange(8.0).view(1, 1, 8, 1).expand(2, 1, 8, 10)), None)
    assert torch.allclose(freq, freq[:, :1].expand_as(freq))  # only frequency differs: every step alike
    assert d.steps(torch.zeros(1, 6, 3), None)[0].shape == (1, 3, 3)  # a local view: fewer columns


def test_video_steps_are_its_tubelets_of_time_first_first():
    d = VideoDomain(frames=4, size=8)
    d.tubelet, d.channels = [2, 4, 4], 1  # what loading the data decides
    emb = summing(d.embedder(3))
    clip = torch.arange(4.0).view(1, 1, 4, 1, 1).expand(2, 1, 4, 8, 8)  # frame f holds f
    steps, pad = d.steps(emb(clip), None)
    assert steps.shape == (2, 2, 3) and pad is None
    # tubelet t sums 4 x 4 pixels of frames 2t and 2t + 1
    assert torch.allclose(steps, (64 * torch.arange(2.0) + 16).view(1, 2, 1).expand(2, 2, 3))


def test_text_steps_are_its_tokens_and_padding():
    t, pad = torch.randn(2, 5, 3), torch.tensor([[False] * 5, [False] * 2 + [True] * 3])
    steps, step_pad = TextDomain().steps(t, pad)
    assert torch.equal(steps, t) and torch.equal(step_pad, pad)


# ---- the module ------------------------------------------------------------------------------------------------
def tiny_image(**kw):
    torch.manual_seed(0)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    return d, enc, CPC(enc, d, **({"context": 8} | kw))


def test_image_module_encodes_each_row_alone_and_trains_every_parameter():
    _, enc, obj = tiny_image()
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    loss, logs = obj(enc, {"views": [x]}, {"step": 0})
    assert math.isfinite(loss.item()) and sorted(logs) == ["acc_1", "acc_2", "acc_3", "rep"]
    assert torch.allclose(logs["rep"], enc(x)[1]) and not logs["rep"].requires_grad  # the whole view, as evaluation
    loss.backward()
    for name, p in [*enc.named_parameters(), *obj.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.no_grad():
        z, valid = obj.encode_steps(enc, x, None)
        moved = x.clone()
        moved[..., 6:, :] = 5.0  # the last row of patches only
        z2, _ = obj.encode_steps(enc, moved, None)
    assert z.shape == (6, 4, 16) and valid.all()
    assert torch.allclose(z[:, :3], z2[:, :3]) and not torch.allclose(z[:, 3], z2[:, 3])  # no latent sees another row
    assert torch.allclose(z[:, 0], enc(x, torch.arange(4).expand(6, 4))[1], atol=1e-6)  # the first row, pooled


def test_steps_must_leave_a_step_to_predict():
    with pytest.raises(UserError, match="objective.steps=4 reaches past the last"):
        tiny_image(steps=4)  # 4 rows: at most 3 ahead


class Seq:
    """A text-like domain without a tokenizer: ids of up to 6 tokens, each token a step (TextDomain's own steps)."""
    name, num_tokens = "seq", 6
    steps = TextDomain.steps

    def embedder(self, dim):
        return TokenEmbed(11, self.num_tokens, dim, "learned")


def test_padding_is_never_scored_and_samples_do_not_depend_on_their_batch():
    torch.manual_seed(0)
    enc = Encoder(Seq(), dim=8, depth=1, heads=2).double()
    obj = CPC(enc, Seq(), steps=2, context=8).double()
    ids = torch.randint(1, 11, (4, 5), generator=torch.Generator().manual_seed(2))
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True], [False] * 2 + [True] * 3])
    loss, logs = obj(enc, {"views": [ids], "pad": [pad]}, {})
    longer = torch.cat([ids.masked_fill(pad, 7), torch.full((4, 1), 3)], 1)  # other padding ids, one more column
    loss2, logs2 = obj(enc, {"views": [longer], "pad": [torch.cat([pad, torch.ones(4, 1, dtype=torch.bool)], 1)]}, {})
    assert loss.item() == pytest.approx(loss2.item(), rel=1e-12)
    assert torch.allclose(logs["rep"], logs2["rep"], atol=1e-12)
    z, valid = obj.encode_steps(enc, ids, pad)
    assert z.shape == (4, 6, 8) and torch.equal(valid, torch.cat([~pad, torch.zeros(4, 1, dtype=torch.bool)], 1))
    assert torch.allclose(loss, cpc_loss(obj.predict(z, valid), z, valid)[0])


class Flat(nn.Module):
    """A tiny encoder over vectors: the pooled output is a linear map of the input."""

    def __init__(self, d_in=6, dim=8):
        super().__init__()
        self.dim, self.lin = dim, nn.Linear(d_in, dim)

    def forward(self, x, keep=None, pad=None):
        return None, self.lin(x)


def test_rl_predicts_the_next_steps_of_the_episode_from_the_current_one():
    torch.manual_seed(0)
    enc = Flat()
    obj = CPC(enc, SimpleNamespace(actions=("discrete", 3)), steps=3, context=8)
    assert obj.future_steps == 3  # the loader brings the next 3 steps' views
    g = torch.Generator().manual_seed(1)
    b = 7
    views = [torch.randn(b, 6, generator=g) for _ in range(4)]
    valid = torch.ones(b, 3, dtype=torch.bool)
    valid[0, 1:] = False  # sample 0's episode ends after one step: its last view repeated
    batch = {"views": views, "valid": valid, "action": torch.zeros(b, 3, dtype=torch.long)}
    loss, logs = obj(enc, batch, {})
    assert sorted(logs) == ["acc_1", "acc_2", "acc_3", "rep"] and torch.allclose(logs["rep"], enc.lin(views[0]))
    z = torch.stack([enc.lin(v) for v in views], 1)  # [b 4 d]
    all_valid = torch.cat([torch.ones(b, 1, dtype=torch.bool), valid], 1)
    assert torch.allclose(loss, cpc_loss(obj.predict(z, all_valid), z, all_valid)[0])
    moved = [v.clone() for v in views]
    moved[2][0], moved[3][0] = 9.0, -9.0  # past sample 0's end
    assert obj(enc, batch | {"views": moved}, {})[0].item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [*enc.parameters(), *obj.parameters()])


def test_compatible_with_ordered_or_episodic_domains_only():
    assert compatible(ImageDomain, CPC, Encoder) is None
    assert "tokens in an order (time, rows) or episodes" in compatible(TabularDomain, CPC)
