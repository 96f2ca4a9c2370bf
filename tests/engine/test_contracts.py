"""multissl/contracts.py: optional members read as their declared defaults, a class that lacks a required member
is refused with one line naming it, and the two meanings of the old `needs_tokens` are separate flags."""
import pytest
import torch
from omegaconf import open_dict

import toys
from tiny import item_views
from multissl import contracts
from multissl.contracts import Domain, Encoder, Objective, optional
from multissl.data import Views
from multissl.domains.tabular import TabularDomain
from multissl.errors import UserError
from multissl.objectives.simclr import SimCLR
from multissl.train import run


class Bare:
    pass


def test_a_missing_optional_member_reads_as_its_default():
    assert optional(Bare(), Objective, "global_views") == 2
    assert optional(Bare(), Objective, "needs_token_encoder") is False
    assert optional(Bare(), Objective, "corrupt_view") is False
    assert optional(Bare(), Objective, "after_step")(None, {"step": 0}) is None  # a no-op, callable
    assert optional(Bare(), Domain, "num_classes") is None and optional(Bare(), Domain, "corrupt") is None
    assert optional(Bare(), Domain, "drops_masked") is True and optional(Bare(), Domain, "variable_length") is False
    x, pad = optional(Bare(), Domain, "collate")([torch.zeros(2), torch.ones(2)])
    assert torch.equal(x, torch.tensor([[0.0, 0.0], [1.0, 1.0]])) and pad is None
    assert optional(Bare(), Encoder, "supports_masking") is False and optional(Bare(), Encoder, "domains") is None
    with pytest.raises(KeyError, match="not an optional member"):
        optional(Bare(), Objective, "teacher")


def test_every_optional_member_is_documented_and_none_is_also_required():
    for contract, members in contracts.OPTIONAL.items():
        assert set(members).isdisjoint(contracts.members(contract))
        assert all(isinstance(doc, str) and doc for _, doc in members.values()), contract
    assert {"dataset", "views", "embedder", "mask", "preprocess", "state"} <= set(contracts.members(Domain))


def test_a_domain_that_lacks_required_members_is_refused_by_name(tiny):
    cfg = tiny.config("trainer.max_steps=1")
    with open_dict(cfg):
        cfg.domain = {"_target_": "toys.Incomplete"}
    with pytest.raises(UserError, match=r"domain Incomplete lacks views, mask of the Domain contract") as e:
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
    with pytest.raises(UserError, match="lacks views, mask"):
        contracts.check(toys.Incomplete(), Domain, "domain")
