"""SimCLR + MAE: the summed loss against hand references (NT-Xent in python loops, the masked MSE of normalised
patches), the weight, what each view is, and on tables: view 0 is the row itself corrupted at the mask (VIME), view
1 a SCARF row."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from multissl.data import Views
from multissl.domains.image import ImageDomain
from multissl.domains.tabular import TabularDomain
from multissl.encoder import Encoder
from multissl.objectives.simclr_mae import SimCLRMAE


def reference_nt_xent(z_a, z_b, temperature):
    z = [*z_a.tolist(), *z_b.tolist()]
    n2, n = len(z), len(z) // 2
    cos = lambda u, v: sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))  # noqa: E731
    total = 0.0
    for i in range(n2):
        pos = i + n if i < n else i - n
        denom = sum(math.exp(cos(z[i], z[k]) / temperature) for k in range(n2) if k != i)
        total -= math.log(math.exp(cos(z[i], z[pos]) / temperature) / denom)
    return total / n2


def reference_masked_mse(x, pred, masked, p=2):
    """Per-patch normalised pixels of x [b 1 h w] (MAE's norm_pix_loss), MSE at the masked patches only."""
    b, _, h, w = x.shape
    total, count = 0.0, 0
    for i in range(b):
        for m in masked[i].tolist():
            r, c = divmod(m, w // p)
            patch = x[i, 0, r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(-1)
            target = (patch - patch.mean()) / torch.sqrt(patch.var(unbiased=True) + 1e-6)
            total += float(((pred[i, m] - target) ** 2).mean())
            count += 1
    return total / count


def setup(weight=1.0, seed=0):
    torch.manual_seed(seed)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    obj = SimCLRMAE(enc, d, projector=(32, 16), temperature=0.2, recon_weight=weight, decoder_dim=16,
                    decoder_depth=1, decoder_heads=2)
    keep, masked = d.mask(6, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    return d, enc, obj, {"views": [torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 1, 8, 8, generator=g)],
                         "keep": keep, "masked": masked}


@pytest.mark.parametrize("weight", [0.0, 1.0, 2.5])
def test_loss_is_nt_xent_of_the_masked_and_the_whole_view_plus_the_weighted_reconstruction(weight):
    d, enc, obj, batch = setup(weight)
    preds = []
    obj.mae.decoder.head.register_forward_hook(lambda m, inp, out: preds.append(out.detach().double()))
    loss, logs = obj(enc, batch, {})
    with torch.no_grad():
        masked_rep = enc(batch["views"][0], batch["keep"])[1]  # view 0 from its kept patches only
        whole = enc(batch["views"][1])[1]
        contrast = reference_nt_xent(obj.projector(masked_rep).double(), obj.projector(whole).double(), 0.2)
    recon = reference_masked_mse(batch["views"][0].double(), preds[0], batch["masked"])
    assert logs["contrast"].item() == pytest.approx(contrast, rel=1e-5)
    assert logs["recon"].item() == pytest.approx(recon, rel=1e-5)
    assert loss.item() == pytest.approx(contrast + weight * recon, rel=1e-5)
    torch.testing.assert_close(logs["rep"], masked_rep)


def test_every_parameter_learns_from_the_sum():
    d, enc, obj, batch = setup()
    loss, _ = obj(enc, batch, {})
    loss.backward()
    for name, p in [*enc.named_parameters(), *obj.named_parameters()]:
        if p.requires_grad and name != "cls":
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_on_tables_view_0_is_the_row_itself_corrupted_and_view_1_a_scarf_row(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({f"f{i}": rng.normal(size=200) for i in range(10)} | {"target": rng.integers(0, 2, 200)})
    df.to_csv(tmp_path / "t.csv", index=False)
    d = TabularDomain(data={"path": str(tmp_path / "t.csv"), "target": "target"}, corruption_rate=0.6, mask_ratio=0.3)
    train = d.dataset("train")
    views = Views(train, d, seed=0, n_global=2, corrupt=True)
    for k in range(5):
        item, row = views[k], train[views.sample_index(k)]["x"]
        torch.testing.assert_close(item["clean"], d.eval_input(row))  # the target: the row as it is
        masked = item["masked"]
        changed0 = (item["views"][0] != row).nonzero().flatten()
        assert set(changed0.tolist()) <= set(masked.tolist())  # VIME: only masked features replaced
        changed1 = (item["views"][1] != row).sum().item()
        assert 0 < changed1 <= 6  # SCARF: round(0.6 x 10) features take another row's value (or the same)
