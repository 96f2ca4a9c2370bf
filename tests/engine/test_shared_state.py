"""One state for every process (multissl.build): a domain built from another's `state()` derives nothing again and
loads the same data — which is how every process but the main one builds its domain — and a process that loaded other
data than the main process is refused in one line."""
import json

import pytest
from omegaconf import OmegaConf

import multissl.build as build
from multissl.cli import load_config, options
from multissl.errors import UserError

from tiny import TINY_ENCODER, domain_data

DOMAINS = options("domain")


def config(domain):
    return load_config([*TINY_ENCODER, f"domain={domain}", *domain_data([f"domain={domain}"])])


@pytest.mark.parametrize("domain", DOMAINS)
def test_a_domain_built_from_another_ones_state_is_the_same(domain):
    cfg = config(domain)
    first = build.build_domain(cfg)
    again = build.make(cfg.domain, data=OmegaConf.to_container(cfg.data), state=json.loads(json.dumps(first.state())))
    again.dataset("train")
    assert json.dumps(again.state(), sort_keys=True) == json.dumps(first.state(), sort_keys=True)
    assert build.fingerprint(again) == build.fingerprint(first)


def test_a_process_that_loaded_other_data_is_refused_by_name(monkeypatch):
    domain = build.build_domain(config("image"))
    mine = build.fingerprint(domain)
    for other, says in (({**mine, "sizes": [5, 1]}, r"\[5, 1\] training/held-out samples"),
                        ({**mine, "samples": [[s[0], s[1] + 1, s[2]] for s in mine["samples"]]}, "other samples"),
                        ({**mine, "state": "0"}, "a different domain state")):
        monkeypatch.setattr(build, "gather_object", lambda x, other=other: [mine, other])
        with pytest.raises(UserError, match=f"process 1 loaded other data than process 0: {says}"):
            build.same_data(domain)
    monkeypatch.setattr(build, "gather_object", lambda x: [mine, dict(mine)])
    build.same_data(domain)  # the same: nothing said
