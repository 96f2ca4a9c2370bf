"""LeJEPA: SIGReg against a loop over slices and points of the unfolded integral, its invariants (a standard Gaussian
sample scores its expected value, a collapsed / scaled / shifted one grows with the batch), the directions as a
function of the step, the prediction term against a loop, and the module's step on a tiny Encoder."""
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.objectives.lejepa import LeJEPA, directions, lejepa_loss, lejepa_terms, quadrature, sigreg


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


# ---- independent references (plain loops, float64) ---------------------------------------------------------------
def ref_epps_pulley(x, t_max, n_points):
    """N * integral over [-t_max, t_max] of |ecf(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt, by the trapezoid rule on the
    full symmetric grid (2 n_points - 1 points: no folding), ecf(t) = mean of cos(t x) + i sin(t x)."""
    n, dt = len(x), t_max / (n_points - 1)
    grid = [k * dt for k in range(-(n_points - 1), n_points)]
    total = 0.0
    for j, t in enumerate(grid):
        re = sum(math.cos(t * v) for v in x) / n
        im = sum(math.sin(t * v) for v in x) / n
        phi = math.exp(-t * t / 2)
        f = ((re - phi) ** 2 + im ** 2) * phi
        total += f * (dt / 2 if j in (0, len(grid) - 1) else dt)
    return n * total


def ref_sigreg(z, a, t_max=3.0, n_points=17):
    """z [N K], a [K S]: each slice's projections by explicit dot products, the mean of their statistics."""
    rows, cols = z.tolist(), a.T.tolist()
    stats = []
    for u in cols:
        x = [sum(r_k * u_k for r_k, u_k in zip(r, u)) for r in rows]
        stats.append(ref_epps_pulley(x, t_max, n_points))
    return sum(stats) / len(stats)


def ref_pred(z, n_global):
    """z [N v K]: each sample's global views averaged per dimension, then the squared error of every view to it."""
    rows = z.tolist()
    total, count = 0.0, 0
    for views in rows:
        for view in views:
            for k, value in enumerate(view):
                centre = sum(views[g][k] for g in range(n_global)) / n_global
                total += (value - centre) ** 2
                count += 1
    return total / count


def gaussian_mean(t_max=3.0, n_points=17):
    """The statistic's expectation on N(0, 1) samples: N E|ecf(t) - phi(t)|^2 = 1 - phi(t)^2, integrated (folded
    trapezoid with the window), for any N."""
    dt = t_max / (n_points - 1)
    out = 0.0
    for j in range(n_points):
        t = j * dt
        out += (dt if j in (0, n_points - 1) else 2 * dt) * math.exp(-t * t / 2) * (1 - math.exp(-t * t))
    return out


# ---- SIGReg ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,k,slices", [(2, 1, 1), (7, 3, 5), (16, 8, 12)])
@pytest.mark.parametrize("t_max,n_points", [(3.0, 17), (5.0, 5), (1.0, 2)])
def test_sigreg_matches_reference(n, k, slices, t_max, n_points):
    z = rand(n, k, seed=n + k, scale=1.3) + 0.2
    got = sigreg(z, step=11, num_slices=slices, t_max=t_max, n_points=n_points).item()
    want = ref_sigreg(z, directions(k, slices, 11, dtype=torch.float64), t_max, n_points)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_default_test_is_the_official_one():
    z = rand(9, 4, seed=3)
    assert sigreg(z, 5).item() == pytest.approx(ref_sigreg(z, directions(4, 256, 5, dtype=torch.float64)), rel=1e-10)
    t, _ = quadrature()
    assert len(t) == 17 and t[-1].item() == 3.0


def test_views_are_tested_apart_along_the_same_directions():
    z = rand(10, 3, 4, seed=4)  # [b v K]
    each = [sigreg(z[:, i], 8, num_slices=7) for i in range(3)]
    assert sigreg(z, 8, num_slices=7).item() == pytest.approx(sum(each).item() / 3, rel=1e-12)


def test_directions_are_unit_and_a_function_of_the_step():
    a = directions(6, 50, step=3, dtype=torch.float64)
    assert a.shape == (6, 50)
    torch.testing.assert_close(a.norm(dim=0), torch.ones(50, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(a, directions(6, 50, step=3, dtype=torch.float64))
    assert not torch.allclose(a, directions(6, 50, step=4, dtype=torch.float64))
    torch.randn(100)  # the global generator's state plays no part
    assert torch.equal(a, directions(6, 50, step=3, dtype=torch.float64))
    z = rand(12, 6, seed=5, scale=2.0)
    assert sigreg(z, 3, num_slices=8).item() == sigreg(z, 3, num_slices=8).item()
    assert sigreg(z, 3, num_slices=8).item() != pytest.approx(sigreg(z, 4, num_slices=8).item(), rel=1e-3)


def test_standard_gaussian_scores_its_expectation_whatever_the_batch():
    expected = gaussian_mean()
    assert expected == pytest.approx(1.0525, abs=1e-4)
    for n in (256, 1024):
        mean = sum(sigreg(rand(n, 16, seed=s), step=s, num_slices=64).item() for s in range(16)) / 16
        assert mean == pytest.approx(expected, rel=0.2)


@pytest.mark.parametrize("n", [256, 2048])
def test_collapsed_scaled_or_shifted_embeddings_score_large(n):
    z = rand(n, 16, seed=1)
    gauss = sigreg(z, 0, num_slices=64).item()
    assert gauss < 3
    # every sample at the origin: ecf = 1, so the statistic is N sum_k w_k (1 - phi_k)^2 on every slice
    t, w = quadrature()
    collapsed = n * (w * (1 - torch.exp(-t.square() / 2)).square()).sum().item()
    assert sigreg(torch.zeros_like(z), 0, num_slices=64).item() == pytest.approx(collapsed, rel=1e-12)
    for bad in (torch.zeros_like(z), z * 3, z * 0.3, z + 2, rand(n, 1, seed=2).expand(-1, 16)):
        assert sigreg(bad, 0, num_slices=64).item() > 0.1 * n > 8 * gauss


def test_sigreg_gradient_is_finite_and_bf16_inputs_are_tested_in_float32():
    z = rand(32, 8, seed=6, scale=0.5).float().requires_grad_()
    sigreg(z, 1).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = sigreg(z.bfloat16(), 1)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(sigreg(z.detach().bfloat16().float(), 1).item(), rel=1e-5)


# ---- prediction and the whole loss -------------------------------------------------------------------------------
@pytest.mark.parametrize("n,v,k,n_global", [(1, 2, 3, 2), (5, 3, 4, 2), (4, 8, 2, 2), (6, 4, 5, 1)])
def test_prediction_term_matches_reference(n, v, k, n_global):
    z = rand(n, v, k, seed=n * v + k)
    assert lejepa_terms(z, 0, n_global, num_slices=4)["pred"].item() == pytest.approx(ref_pred(z, n_global),
                                                                                     rel=1e-12, abs=1e-15)


def test_identical_views_predict_perfectly():
    z = rand(6, 1, 4, seed=7).expand(-1, 5, -1)
    assert lejepa_terms(z, 0, 2, num_slices=4)["pred"].item() == 0.0


def test_loss_weighs_the_terms_by_lambd():
    z = rand(9, 4, 6, seed=8)
    pred = ref_pred(z, 2)
    sig = sum(ref_sigreg(z[:, i], directions(6, 10, 2, dtype=torch.float64)) for i in range(4)) / 4
    for lambd in (0.05, 0.0, 1.0, 0.3):
        got = lejepa_loss(z, 2, lambd=lambd, num_slices=10).item()
        assert got == pytest.approx((1 - lambd) * pred + lambd * sig, rel=1e-10)


def test_gradients_reach_every_view():
    z = rand(8, 4, 5, seed=9).requires_grad_()
    lejepa_loss(z, 0).backward()
    assert torch.isfinite(z.grad).all() and (z.grad.abs().sum((0, 2)) > 0).all()


# ---- the module --------------------------------------------------------------------------------------------------
def tiny_setup(**kw):
    torch.manual_seed(0)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    return d, enc, LeJEPA(enc, d, **({"projector": (32, 8), "num_slices": 16} | kw))


def tiny_batch(n=8, local=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(n, 1, 8, 8, generator=g, dtype=dtype) for _ in range(2)]
    views += [torch.randn(n, 1, 4, 4, generator=g, dtype=dtype) for _ in range(local)]
    return {"views": views, "y": torch.zeros(n, dtype=torch.long)}


@pytest.mark.parametrize("local", [0, 2])
def test_module_step_matches_reference_and_trains_every_parameter(local):
    _, enc, obj = tiny_setup()
    enc.double(), obj.double()
    out = []
    obj.projector.register_forward_hook(lambda m, i, o: out.append(o.detach().clone()))
    loss, logs = obj(enc, tiny_batch(local=local, dtype=torch.float64), {"step": 4})
    v = 2 + local
    assert len(out) == 1 and out[0].shape == (8 * v, 8)  # one pass over every view: BatchNorm sees all crops
    z = out[0].reshape(v, 8, 8).transpose(0, 1)  # [b v K]
    a = directions(8, 16, 4, dtype=torch.float64)
    pred, sig = ref_pred(z, 2), sum(ref_sigreg(z[:, i], a) for i in range(v)) / v
    assert logs["pred"].item() == pytest.approx(pred, rel=1e-10)
    assert logs["sigreg"].item() == pytest.approx(sig, rel=1e-10)
    assert loss.item() == pytest.approx(0.95 * pred + 0.05 * sig, rel=1e-10)
    assert logs["rep"].shape == (8, 16) and not logs["rep"].requires_grad
    loss.backward()
    for name, p in [*enc.named_parameters(), *obj.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_module_declarations_and_config():
    assert LeJEPA.batch_statistics and LeJEPA.global_views == 2 and LeJEPA.local_views == 6
    assert "objective.lambd" in LeJEPA.collapse_hint
    cfg = OmegaConf.load(Path(__file__).parents[2] / "configs/objective/lejepa.yaml")
    assert cfg._target_ == "multissl.objectives.lejepa.LeJEPA" and list(cfg.projector) == [256, 256, 64]
    obj = tiny_setup(projector=tuple(cfg.projector))[2]
    assert obj.projector(torch.randn(4, 16)).shape == (4, cfg.projector[-1])


@pytest.mark.parametrize("bad", [{"lambd": 1.5}, {"lambd": -0.1}, {"num_slices": 0}, {"n_points": 1}])
def test_module_rejects_bad_hyperparameters_in_one_line(bad):
    with pytest.raises(UserError) as e:
        tiny_setup(**bad)
    assert "\n" not in str(e.value)
