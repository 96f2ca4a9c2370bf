"""SimCLR: NT-Xent against an explicit per-anchor loop, invariants, and a module smoke test."""
import math

import pytest
import torch

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.objectives.simclr import SimCLR, dimension_normalize, nt_xent_loss


def reference_nt_xent(z_a, z_b, temperature):
    """Independent reference: python loop over the 2N anchors, cosine similarity computed by hand."""
    z = [row for row in z_a.tolist()] + [row for row in z_b.tolist()]
    n2 = len(z)
    n = n2 // 2

    def cos(u, v):
        dot = sum(a * b for a, b in zip(u, v))
        return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))

    total = 0.0
    for i in range(n2):
        pos = i + n if i < n else i - n
        denom = sum(math.exp(cos(z[i], z[k]) / temperature) for k in range(n2) if k != i)
        total += -math.log(math.exp(cos(z[i], z[pos]) / temperature) / denom)
    return total / n2


def tiny_encoder():
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    return d, Encoder(d, dim=16, depth=1, heads=2)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("n,dim", [(1, 3), (4, 5), (6, 2)])
def test_matches_reference(n, dim, temperature):
    g = torch.Generator().manual_seed(n * 10 + dim)
    z_a = torch.randn(n, dim, generator=g, dtype=torch.float64)
    z_b = torch.randn(n, dim, generator=g, dtype=torch.float64)
    got = nt_xent_loss(z_a, z_b, temperature).item()
    assert got == pytest.approx(reference_nt_xent(z_a, z_b, temperature), rel=1e-9, abs=1e-12)


def test_default_temperature_is_0_1():
    g = torch.Generator().manual_seed(1)
    z_a, z_b = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    assert nt_xent_loss(z_a, z_b).item() == pytest.approx(reference_nt_xent(z_a, z_b, 0.1), rel=1e-9)


def test_finite_and_symmetric_in_views():
    g = torch.Generator().manual_seed(2)
    z_a, z_b = torch.randn(2, 7, 6, generator=g, dtype=torch.float64)
    ab, ba = nt_xent_loss(z_a, z_b, 0.2), nt_xent_loss(z_b, z_a, 0.2)
    assert torch.isfinite(ab)
    assert ab.item() == pytest.approx(ba.item(), rel=1e-12)


def test_invariant_to_per_row_rescaling():
    g = torch.Generator().manual_seed(3)
    z_a, z_b = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    s_a = torch.rand(5, 1, generator=g, dtype=torch.float64) * 10 + 0.01
    s_b = torch.rand(5, 1, generator=g, dtype=torch.float64) * 10 + 0.01
    assert nt_xent_loss(z_a * s_a, z_b * s_b, 0.1).item() == pytest.approx(nt_xent_loss(z_a, z_b, 0.1).item(),
                                                                            rel=1e-10)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_collapsed_embeddings_give_log_2n_minus_1(n):
    row = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64)
    z = row.expand(n, -1).clone()
    assert nt_xent_loss(z, z.clone(), 0.1).item() == pytest.approx(math.log(2 * n - 1), abs=1e-10)


def test_perfectly_separated_pairs_beat_collapse():
    # each pair shares a unique one-hot direction: the positive dominates all negatives
    z = torch.eye(4, dtype=torch.float64)
    loss = nt_xent_loss(z, z.clone(), 0.1).item()
    assert loss == pytest.approx(reference_nt_xent(z, z, 0.1), rel=1e-10)
    assert loss < math.log(2 * 4 - 1)


def test_gradients_reach_both_inputs():
    g = torch.Generator().manual_seed(4)
    z_a = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z_b = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    nt_xent_loss(z_a, z_b, 0.1).backward()
    for z in (z_a, z_b):
        assert z.grad is not None
        assert torch.isfinite(z.grad).all()
        assert z.grad.abs().sum() > 0


def test_module_two_views_matches_reference_on_projections():
    torch.manual_seed(0)
    d, enc = tiny_encoder()
    obj = SimCLR(enc, d, projector=(32, 16), temperature=0.2)
    captured = []
    obj.projector.register_forward_hook(lambda m, i, o: captured.append(o.detach().double()))
    views = [torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)]
    loss, logs = obj(enc, {"views": views, "y": torch.zeros(6, dtype=torch.long)}, {})
    assert len(captured) == 2
    assert loss.item() == pytest.approx(reference_nt_xent(captured[0], captured[1], 0.2), rel=1e-4)
    assert logs["rep"].shape == (6, 16)


def test_module_multicrop_smoke_gradient_reaches_encoder():
    torch.manual_seed(0)
    d, enc = tiny_encoder()
    obj = SimCLR(enc, d, projector=(32, 16))
    views = [torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8), torch.randn(8, 1, 4, 4)]
    loss, logs = obj(enc, {"views": views, "y": torch.zeros(8, dtype=torch.long)}, {})
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in enc.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert enc.embed.proj.weight.grad is not None and enc.embed.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in obj.projector.parameters())


# ---- the variants of Garrido et al. 2023 ---------------------------------------------------------------------

def reference_variant(z_a, z_b, temperature, negatives, normalize):
    """Loops: rows normalised to unit length, or every column centred and scaled to norm sqrt(n / d) per view; the
    positive's dot product as it is, each negative's through |.| or (.)^2."""
    def prepare(z):
        rows = z.tolist()
        n, d = len(rows), len(rows[0])
        if normalize == "embeddings":
            return [[v / math.sqrt(sum(x * x for x in r)) for v in r] for r in rows]
        cols = [[r[j] for r in rows] for j in range(d)]
        out_cols = []
        for c in cols:
            mu = sum(c) / n
            c = [v - mu for v in c]
            norm = math.sqrt(sum(v * v for v in c))
            out_cols.append([v / norm * math.sqrt(n / d) for v in c])
        return [[out_cols[j][i] for j in range(d)] for i in range(n)]

    z = prepare(z_a) + prepare(z_b)
    n2, n = len(z), len(z) // 2
    shape = {"cosine": lambda s: s, "abs": abs, "square": lambda s: s * s}[negatives]
    total = 0.0
    for i in range(n2):
        pos = i + n if i < n else i - n
        dot = lambda k: sum(a * b for a, b in zip(z[i], z[k]))  # noqa: E731
        logits = {k: (dot(k) if k == pos else shape(dot(k))) / temperature for k in range(n2) if k != i}
        total += -logits[pos] + math.log(sum(math.exp(v) for v in logits.values()))
    return total / n2


@pytest.mark.parametrize("negatives", ["cosine", "abs", "square"])
@pytest.mark.parametrize("normalize", ["embeddings", "dimensions"])
def test_variants_match_reference(negatives, normalize):
    g = torch.Generator().manual_seed(7)
    z_a, z_b = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
    got = nt_xent_loss(z_a, z_b, 0.2, negatives=negatives, normalize=normalize).item()
    assert got == pytest.approx(reference_variant(z_a, z_b, 0.2, negatives, normalize), rel=1e-9)


def test_square_and_abs_negatives_do_not_reward_opposite_embeddings():
    """Negating both views of one sample keeps its positive pair and flips the sign of every similarity it has with
    the others: plain cosines reward or charge that, |s| and s^2 cannot tell (an opposite negative counts as an
    aligned one)."""
    g = torch.Generator().manual_seed(8)
    z_a, z_b = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    flip = torch.ones(5, 1, dtype=torch.float64)
    flip[2] = -1
    for neg in ("abs", "square"):
        assert nt_xent_loss(z_a, z_b, 0.5, negatives=neg).item() == pytest.approx(
            nt_xent_loss(z_a * flip, z_b * flip, 0.5, negatives=neg).item(), rel=1e-12)
    assert nt_xent_loss(z_a, z_b, 0.5).item() != pytest.approx(nt_xent_loss(z_a * flip, z_b * flip, 0.5).item())


def test_dimension_normalize_centres_and_scales_columns():
    z = torch.randn(10, 4, dtype=torch.float64) * 3 + 1
    out = dimension_normalize(z)
    torch.testing.assert_close(out.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(out.norm(dim=0), torch.full((4,), math.sqrt(10 / 4), dtype=torch.float64))
    assert out.pow(2).sum(1).mean().item() == pytest.approx(1.0)  # rows of unit norm on average


def test_module_rejects_an_unknown_form():
    d, enc = tiny_encoder()
    with pytest.raises(UserError, match="objective.negatives"):
        SimCLR(enc, d, negatives="cube")
