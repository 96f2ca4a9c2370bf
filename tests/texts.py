"""The small corpus the text tests train on, and the checks every text encoder meets (tests/domains/text): a step that
trains every parameter, and a padded batch that gives each text what it gets alone."""
import torch
from accelerate.utils import set_seed

from multissl.data import objective_loader
from multissl.schedules import step_values
from multissl.train import SSLModel, build_domain, build_models

from tiny import assert_every_parameter_learns

TOL = 1e-5
LINES = [f"{w} number {i} is {'odd' if i % 2 else 'even'} and {w}s like it" for i, w in
         enumerate(["cat", "dog", "bird", "fish", "frog", "mouse", "horse", "sheep"] * 5)]


def write_corpus(folder):
    f = folder / "lines.txt"
    f.write_text("\n".join(LINES), encoding="utf-8")
    return f


def text_args(tmp_path, corpus) -> tuple:
    return ("domain=text", f"data.path={corpus}", "domain.vocab_size=120", f"domain.cache_dir={tmp_path / 'cache'}")


def one_step_trains_every_parameter(cfg):
    """One training step of cfg's encoder and objective on a batch of 8: a finite loss, every parameter learns."""
    set_seed(0)
    domain = build_domain(cfg)
    model = SSLModel(*build_models(cfg, domain)).train()
    batch = next(iter(objective_loader(domain.dataset("train"), domain, model.objective, 0, 8, 0, 1, 0, 1)))
    batch.pop("skipped")
    loss, _ = model(batch, step_values(0, 10, cfg.optim, cfg.ema, 1e-3))
    assert torch.isfinite(loss)
    loss.backward()
    assert_every_parameter_learns(model)


@torch.no_grad()
def padded_batch_equals_each_text_alone(enc, domain, texts: list[str]):
    """The tokens and the pooled representation of each text in a padded batch are those it gets alone."""
    x, pad = domain.preprocess(texts)
    tokens, pooled = enc(x, pad=pad)
    for i, t in enumerate(texts):
        x1, pad1 = domain.preprocess([t])
        t1, p1 = enc(x1, pad=pad1)
        torch.testing.assert_close(pooled[i], p1[0], atol=TOL, rtol=TOL)
        torch.testing.assert_close(tokens[i, :t1.shape[1]], t1[0], atol=TOL, rtol=TOL)
