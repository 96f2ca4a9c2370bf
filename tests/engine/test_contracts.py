"""multissl/contracts.py: optional members read as their declared defaults, a class that lacks a required member
is refused with one line naming it, and the two meanings of the old `needs_tokens` are separate flags."""
import pytest
import torch
import toys
from multissl.domains.tabular import TabularDomain
from multissl.objectives.simclr import SimCLR
from omegaconf import open_dict
from tiny import item_views
from torch import nn

from multissl import contracts
from multissl.contracts import Domain, Encoder, Objective, optional
from multissl.data import Views
from multissl.errors import UserError
from multissl.train import run


class Bare:
    pass


def test_a_missing_optional_member_reads_as_its_default():
    assert optional(Bare(), Objective, "global_views") == 2 and optional(Bare(), Objective, "needs") == ()
    assert optional(Bare(), Objective, "needs_token_encoder") is False
    assert optional(Bare(), Objective, "corrupt_view") is False
    assert optional(Bare(), Objective, "after_step")(None, {"step": 0}) is None  # a no-op, callable
    assert optional(Bare(), Domain, "num_classes") is None and optional(Bare(), contracts.Masked, "corrupt") is None
    assert optional(Bare(), contracts.Masked, "drops_masked") is True
    assert optional(Bare(), Encoder, "supports_masking") is False and optional(Bare(), Encoder, "domains") is None
    with pytest.raises(KeyError, match="not an optional member"):
        optional(Bare(), Objective, "teacher")


def test_every_optional_member_is_documented_and_none_is_also_required():
    for contract, members in contracts.OPTIONAL.items():
        assert set(members).isdisjoint(contracts.members(contract))
        assert all(isinstance(doc, str) and doc for _, doc in members.values()), contract
    core = set(contracts.members(Domain))
    assert core == {"name", "num_tokens", "dataset", "views", "embedder", "eval_input", "preprocess", "state"}
    assert all(contracts.members(c) for c in contracts.CAPABILITIES)  # a capability is had by having its members


def test_capabilities_are_protocols_checked_without_evaluating_members():
    """isinstance on an instance and `has` on a class, before data is loaded: a property that needs the data is
    looked up, not called."""
    class Lazy:
        @property
        def target_dim(self):
            raise AssertionError("evaluated")

        def mask(self, batch_size, rng): ...
        def target(self, x): ...
        def reconstruction_loss(self, pred, target, masked): ...
    assert isinstance(Lazy(), contracts.Masked) and contracts.has(Lazy, contracts.Masked)
    assert not isinstance(Bare(), contracts.Masked) and not contracts.has(Bare, contracts.Masked)
    assert contracts.has(toys.ToySequences, contracts.VariableLength)
    assert not contracts.has(TabularDomain, contracts.VariableLength) and contracts.has(TabularDomain, contracts.Masked)


class Plain:
    """A domain of the core contract alone: no masks, no batched views."""
    name, num_tokens = "plain", 4

    def __init__(self, data=None, state=None):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(64, 4, 3, generator=g), torch.arange(64) % 2
        self.num_classes = 2

    def dataset(self, split):
        return toys.Sequences(list(self.x[:48] if split == "train" else self.x[48:]),
                              (self.y[:48] if split == "train" else self.y[48:]).tolist())

    def views(self, x, rng, n_global=2):
        return [x + 0.1 * torch.randn(x.shape, generator=rng) for _ in range(n_global)]

    def embedder(self, dim):
        return nn.Linear(3, dim)

    def eval_input(self, x):
        return x

    def preprocess(self, raw):
        return torch.as_tensor(raw, dtype=torch.float32)

    def state(self):
        return {}


def test_a_core_only_domain_trains_non_masked_objectives_and_refuses_masked_ones_in_one_line(tiny):
    assert contracts.compatible(Plain, SimCLR) is None
    from multissl.objectives.mae import MAE
    why = contracts.compatible(Plain, MAE, names={"domain": "plain", "objective": "mae"})
    assert why == ("objective=mae cannot train on domain=plain: it needs masked modelling (mask, target, "
                   "reconstruction_loss), which domain=plain does not offer")
    cfg = tiny.config("trainer.max_steps=2", "data.batch_size=8")
    with open_dict(cfg):
        cfg.domain = {"_target_": f"{__name__}.Plain"}
    folder = run(cfg)
    assert (folder / "encoder" / "config.json").is_file()
    with open_dict(cfg):
        cfg.objective = {"_target_": "multissl.objectives.mae.MAE"}
        cfg.run.dir = str(tiny.root / "mae")
    with pytest.raises(UserError, match="needs masked modelling") as e:
        run(cfg)
    assert "\n" not in str(e.value)


def test_a_domain_that_lacks_required_members_is_refused_by_name(tiny):
    cfg = tiny.config("trainer.max_steps=1")
    with open_dict(cfg):
        cfg.domain = {"_target_": "toys.Incomplete"}
    with pytest.raises(UserError, match=r"domain Incomplete lacks views of the Domain contract") as e:
        run(cfg)
    assert "\n" not in str(e.value) and not (tiny.root / "run").exists()


class CorruptedOnly(SimCLR):
    """Wants view 0 corrupted by the domain, but uses pooled representations only: any encoder will do."""
    corrupt_view = True


def test_corrupt_view_and_token_encoder_are_separate_declarations(tiny, monkeypatch):
    seen = []
    real = SimCLR.forward

    def record(self, encoder, batch, sched):
        seen.append(batch)
        return real(self, encoder, batch, sched)
    monkeypatch.setattr(CorruptedOnly, "forward", record)
    cfg = tiny.config("domain=tabular", "encoder=mlp", "encoder.dim=16", "encoder.hidden=[16]", "trainer.max_steps=1",
                      tiny_encoder=False)
    with open_dict(cfg):
        cfg.objective = {"_target_": f"{__name__}.CorruptedOnly"}
    run(cfg)  # an MLP encoder is accepted: the objective never asks for tokens
    batch = seen[0]
    assert "clean" in batch and not torch.equal(batch["clean"], batch["views"][0])  # view 0 corrupted (VIME)


def test_the_mask_is_only_used_to_corrupt_for_objectives_that_ask():
    d = TabularDomain()
    base = d.dataset("train")
    plain, corrupted = Views(base, d, 0, 1)[3], Views(base, d, 0, 1, corrupt=True)[3]
    assert "clean" not in plain and torch.equal(corrupted["clean"], item_views(d, plain)[0])
    changed = (corrupted["views"][0] != item_views(d, plain)[0]).nonzero()[:, 0]
    assert set(changed.tolist()) <= set(plain["masked"].tolist()) and len(changed) > 0


def test_toys_meet_the_contracts():
    contracts.check(toys.ToySequences(), Domain, "domain")
    with pytest.raises(UserError, match="lacks views of"):
        contracts.check(toys.Incomplete(), Domain, "domain")


def test_mask_tokens_are_asked_of_the_encoder_where_the_domain_drops_masked_tokens():
    from multissl.domains.image import ImageDomain
    from multissl.domains.image.resnet import ResNet
    from multissl.domains.text import TextDomain
    from multissl.domains.text.bert import BertEncoder
    from multissl.encoder import Encoder as Transformer
    from multissl.objectives.simmim import SimMIM
    why = contracts.compatible(ImageDomain, SimMIM, ResNet, {"encoder": "resnet18"})
    assert why is not None and "encoder=resnet18" in why and "use encoder=transformer" in why

    class NoMaskTokens(Transformer):
        supports_mask_tokens = False
    why = contracts.compatible(ImageDomain, SimMIM, NoMaskTokens, {"encoder": "mine"})
    assert why == "objective=SimMIM gives the encoder mask tokens, which encoder=mine does not take; use encoder=transformer"
    assert contracts.compatible(ImageDomain, SimMIM, Transformer) is None
    assert contracts.compatible(TextDomain, SimMIM, BertEncoder) is None  # text corrupts ids in place: no token needed


def test_needs_may_name_alternatives_any_one_of_which_will_do():
    class EitherOrdered:
        needs = ((contracts.Ordered, contracts.Episodes),)

    class Stepped(Plain):
        def steps(self, tokens, pad):
            return tokens, pad
    assert contracts.compatible(Stepped, EitherOrdered) is None
    why = contracts.compatible(Plain, EitherOrdered, names={"domain": "plain", "objective": "either"})
    assert why == ("objective=either cannot train on domain=plain: it needs tokens in an order (time, rows) or "
                   "episodes with actions, which domain=plain does not offer")
