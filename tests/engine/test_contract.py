"""Every domain meets every objective, in tiers that grow with domains + objectives rather than their product. The
checks a plugin runs on its own classes (multissl.testing) run here on every built-in, so the two never drift.

- per pair, in process: one training step on a tiny batch; the loss and every logged scalar are finite and
  every trainable parameter of the encoder and the objective's heads gets a finite, non-zero gradient
  (teachers excluded: they have no gradient by design); and one bf16 step, with a finite loss and gradients
  (multissl.testing.check_step);
- per domain: the draws of a step are a function of (seed, position) only (check_draws), batched views and evaluation
  inputs equal per-sample ones (check_batched), and a rebuilt model takes the bit-identical first step;
- a full run() (train, evaluate, checkpoint, export, reload, hand-computed preprocessing, check_export) once per
  domain and once per objective, in pairs that cover both lists.
The 1 vs 2 process parity of every pair is tests/engine/test_distributed.py's. Domains and objectives are discovered
from the installed config folders."""
import json
import math

import pytest
import torch
from accelerate.utils import set_seed
from hydra.utils import get_class
from omegaconf import OmegaConf
from safetensors.torch import load_file

import multissl
from multissl.checkpoint import latest_state, load as load_checkpoint
from multissl.cli import load_config, option_class, options, pairs
from multissl.contracts import Domain, Objective, check, optional
from multissl.errors import UserError
from multissl.monitor import branch_ranks, subset
from multissl.testing import check_batched, check_draws, check_export, check_step, first_step
from multissl.train import build_domain, build_models, run

from tiny import TINY_ENCODER, domain_data

DOMAINS, OBJECTIVES = options("domain"), options("objective")
PAIRS = pairs()  # every domain x every objective that fits it (contracts.compatible: SPR needs episodes)
# a full run for each domain and each objective: pair i = (domain i mod D, objective i mod O)
COVER = [(DOMAINS[i % len(DOMAINS)], OBJECTIVES[i % len(OBJECTIVES)]) for i in range(max(len(DOMAINS), len(OBJECTIVES)))]
COVER = [p if p in PAIRS else next(q for q in PAIRS if q[1] == p[1]) for p in COVER]  # the objective's first domain
BATCH = 16


def pair_config(domain: str, objective: str, *extra, mixed_table=None):
    """Tiny encoder, the domain's test data (tabular: a mixed table with missing cells, so the tokenizer's
    missing-value vectors and category embeddings are exercised too)."""
    table = (f"data.path={mixed_table}", "data.target=churned") if domain == "tabular" and mixed_table else ()
    return load_config([*TINY_ENCODER, f"data.batch_size={BATCH}", f"domain={domain}", f"objective={objective}",
                        *domain_data([f"domain={domain}"]), *table, *extra])


@pytest.fixture(scope="module")
def domains(mixed_table):
    """One built domain per name (its data loaded once for the module)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = build_domain(pair_config(name, "simclr", mixed_table=mixed_table))
        return cache[name]
    return get


def test_registry_is_not_empty_and_every_domain_meets_its_contract():
    assert "image" in DOMAINS and {"simclr", "mae"} <= set(OBJECTIVES)
    for name in DOMAINS:
        cls = get_class(load_config([f"domain={name}"]).domain._target_)
        check(cls(), Domain, "domain")  # a domain is cheap until dataset() loads data (encoders: build_models)


@pytest.mark.parametrize("domain, objective", PAIRS, ids=[f"{d}-{o}" for d, o in PAIRS])
def test_one_step_trains_every_parameter(domains, mixed_table, domain, objective):
    checked = check_step(pair_config(domain, objective, mixed_table=mixed_table), domains(domain))
    assert checked["parameters"] > 0 and math.isfinite(checked["loss"])


@pytest.mark.parametrize("domain", DOMAINS)
def test_draws_depend_only_on_seed_and_position(domains, domain):
    """Exact resume and process-count invariance rest on this (multissl.testing.check_draws)."""
    assert check_draws(domains(domain))["draws"] > 0


@pytest.mark.parametrize("domain", DOMAINS)
def test_same_seed_same_first_step(domains, mixed_table, domain):
    cfg = pair_config(domain, OBJECTIVES[0], mixed_table=mixed_table)
    (m1, l1, _, _), (m2, l2, _, _) = first_step(cfg, domains(domain)), first_step(cfg, domains(domain))
    assert torch.equal(l1, l2)
    for (k, p), (_, q) in zip(m1.named_parameters(), m2.named_parameters()):
        assert (p.grad is None) == (q.grad is None) and (p.grad is None or torch.equal(p.grad, q.grad)), k


@pytest.mark.parametrize("domain", DOMAINS)
def test_batched_views_and_evaluation_inputs_equal_per_sample_ones(domains, domain):
    """What runs on the device is what ran per sample (multissl.testing.check_batched); every domain but the
    variable-length one draws its views for a batched apply."""
    checked = check_batched(domains(domain))
    assert checked["batched_views"] == (domain != "text")


# ---- full runs ------------------------------------------------------------------------------------------------
def image_raw_and_input(domain_obj, preprocess: dict, n: int):
    """5 raw uint8 test images and the model input computed by hand from the exported statistics."""
    raw = torch.stack([domain_obj.dataset("test")[i]["x"] for i in range(n)])
    assert raw.dtype == torch.uint8
    mean = torch.tensor(preprocess["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(preprocess["std"]).view(1, -1, 1, 1)
    return raw, (raw.float() / 255 - mean) / std


def audio_raw_and_input(domain_obj, preprocess: dict, n: int):
    """5 raw test waveforms [b samples] and their normalized log-mel, by hand: reflect-padded power STFT
    (hann), HTK mel filterbank, log, cut to whole time patches, per-bin standardization."""
    import torchaudio.functional as AF
    d = domain_obj
    raw = torch.stack([d.dataset("test")[i]["x"] for i in range(n)])  # [b samples], one clip long
    assert raw.shape == (n, d.clip) and raw.dtype == torch.float32
    padded = torch.nn.functional.pad(raw[:, None], (d.n_fft // 2,) * 2, mode="reflect")[:, 0]
    spec = torch.stft(padded, d.n_fft, d.hop, window=torch.hann_window(d.n_fft), center=False,
                      return_complex=True).abs() ** 2  # [b freq frames]
    fb = AF.melscale_fbanks(d.n_fft // 2 + 1, d.f_min, d.f_max or d.rate / 2, d.n_mels, d.rate)  # [freq mel]
    mel = (fb.T @ spec + 1e-6).log()[..., :d.frames]
    mean, std = torch.tensor(preprocess["mean"])[:, None], torch.tensor(preprocess["std"])[:, None]
    return raw, ((mel - mean) / std)[:, None]


def tabular_raw_and_input(domain_obj, preprocess: dict, n: int):
    """5 raw test rows as a pandas DataFrame (target column included: extra columns are ignored) and the
    encoded rows by hand: (value - mean) / std per exported feature (the default table is all numeric)."""
    raw = domain_obj.dataset("test").frame.head(n)
    feats = preprocess["features"]
    assert [f["kind"] for f in feats] == ["numeric"] * len(feats) and "target" in raw.columns
    x = torch.tensor([[(float(raw[f["name"]].iloc[i]) - f["mean"]) / f["std"] for f in feats] for i in range(n)])
    return raw, x


def rl_raw_and_input(domain_obj, preprocess: dict, n: int):
    """5 raw test observations exactly as the buffer stores them (the default: uint8 stacks [3 48 72] of
    grayscale frames) and the model input by hand: / 255, minus the exported mean frame, / each channel's std."""
    idx = domain_obj.dataset("test").index[:n].numpy()
    raw = torch.from_numpy(domain_obj._buf["obs"][idx])
    assert raw.dtype == torch.uint8 and preprocess["layout"] == "chw" and list(raw.shape[1:]) == preprocess["obs_shape"]
    mean = torch.tensor(preprocess["mean"])[None]  # [1 3 48 72]
    assert mean.shape == (1, *raw.shape[1:])
    std = torch.tensor(preprocess["std"]).view(1, -1, 1, 1)
    return raw, (raw.float() / 255 - mean) / std


def text_raw_and_input(domain_obj, preprocess: dict, n: int):
    """5 raw test strings and, by hand with the exported tokenizer.json, their ids (no special tokens, cut to
    max_length) padded with [PAD] to the longest, and the padding mask."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_str(preprocess["tokenizer"])
    raw = domain_obj.dataset("test").texts[:n]
    ids = [e.ids[:preprocess["max_length"]] for e in tok.encode_batch(raw, add_special_tokens=False)]
    width = max(map(len, ids))
    assert min(map(len, ids)) < width, "the check needs texts of different lengths"
    x = torch.tensor([v + [tok.token_to_id("[PAD]")] * (width - len(v)) for v in ids])
    pad = torch.tensor([[False] * len(v) + [True] * (width - len(v)) for v in ids])
    return raw, (x, pad)


def video_raw_and_input(domain_obj, preprocess: dict, n: int):
    """5 raw test clips as stored (uint8 [b t c s s], every frame of the moving digits) and the model input by hand:
    the middle `frames` frames, / 255, minus each channel's mean, / its std, channels before time."""
    domain_obj.dataset("train")
    clips = domain_obj._clips["test"]
    raw = torch.stack([clips.read(i, list(range(clips.frames(i)))) for i in range(n)])
    t, first = preprocess["frames"], (raw.shape[1] - preprocess["frames"]) // 2
    assert preprocess["stride"] == 1 and raw.dtype == torch.uint8 and raw.shape[1] > t
    mean = torch.tensor(preprocess["mean"]).view(1, 1, -1, 1, 1)
    std = torch.tensor(preprocess["std"]).view(1, 1, -1, 1, 1)
    return raw, ((raw[:, first:first + t].float() / 255 - mean) / std).transpose(1, 2)


RAW_AND_INPUT = {"image": image_raw_and_input, "audio": audio_raw_and_input, "tabular": tabular_raw_and_input,
                 "rl": rl_raw_and_input, "text": text_raw_and_input,
                 "video": video_raw_and_input}
# the held-out metric each domain logs at every evaluation: kNN accuracy where samples have class labels, else
# the domain's own (rl: R^2 of a linear probe of the true state)
HELDOUT = {"rl": "state_r2_mean"}


BRANCHED = [(d, o) for d, o in PAIRS if optional(option_class("objective", o), Objective, "branches") is not None]


@pytest.mark.parametrize("domain, objective", BRANCHED, ids=[f"{d}-{o}" for d, o in BRANCHED])
def test_two_branch_objectives_give_both_outputs_in_every_domain(domains, mixed_table, domain, objective):
    d = domains(domain)
    set_seed(0)
    encoder, obj = build_models(pair_config(domain, objective, mixed_table=mixed_table), d)
    was = [m.training for m in (encoder, obj)]
    out = branch_ranks(obj, encoder.eval(), d, subset(d.dataset("train"), 24), "cpu")
    assert [m.training for m in (encoder.eval(), obj)] == [False, was[1]]  # the objective's mode is restored
    assert 1.0 - 1e-6 <= out["rdm/erank_online"] and 1.0 - 1e-6 <= out["rdm/erank_target"]
    assert out["rdm/diff"] == pytest.approx(out["rdm/erank_target"] - out["rdm/erank_online"])


@pytest.mark.parametrize("domain, objective", COVER, ids=[f"{d}-{o}" for d, o in COVER])
def test_full_run_trains_evaluates_and_exports(tiny, domain, objective):
    cfg = tiny.config(f"domain={domain}", f"objective={objective}", "trainer.max_steps=3", "trainer.eval_samples=300")
    folder = run(cfg)

    rows = tiny.metrics(folder)
    by_step = {r["step"]: r for r in rows if "loss" in r}
    assert sorted(by_step) == [1, 2, 3]
    for r in by_step.values():
        assert math.isfinite(r["loss"])
    final = rows[-1]
    heldout = HELDOUT.get(domain, "knn_acc")
    assert final["step"] == 3 and heldout in final and "rankme" in final
    assert final[heldout] <= 1.0 and math.isfinite(final[heldout])
    assert 1.0 - 1e-6 <= final["rankme"] <= 16 + 1e-6
    # spectral diagnostics for every objective; the rank differential for those with two branches
    spectral_keys = {"erank", "duality/l_c", "duality/l_nc", "duality/l_c_dims", "duality/l_nc_dims"}
    assert spectral_keys <= set(final) and all(math.isfinite(final[k]) for k in spectral_keys)
    assert 1.0 - 1e-6 <= final["erank"] <= 16 + 1e-6
    two_branches = optional(get_class(cfg.objective._target_), Objective, "branches") is not None
    assert ({"rdm/erank_online", "rdm/erank_target", "rdm/diff"} <= set(final)) == two_branches
    if two_branches:
        assert final["rdm/diff"] == pytest.approx(final["rdm/erank_target"] - final["rdm/erank_online"])

    saved = OmegaConf.load(folder / "config.yaml")
    assert saved.meta.domain == domain and saved.meta.objective == objective
    ckpt = folder / "checkpoints" / "step_00000003.pt"
    assert ckpt.is_file()
    for f in ("model.safetensors", "config.json"):
        assert (folder / "encoder" / f).is_file()

    # the export holds exactly the trained encoder weights of the last checkpoint
    model_state = load_checkpoint(ckpt)["model"]
    exported = load_file(str(folder / "encoder" / "model.safetensors"))
    assert set(exported) == {k[len("encoder."):] for k in model_state if k.startswith("encoder.")}
    for k, v in exported.items():
        assert torch.equal(v, model_state["encoder." + k]), k

    if domain not in RAW_AND_INPUT:
        pytest.fail(f"no hand-written preprocessing reference for domain {domain!r}; add one to RAW_AND_INPUT")
    meta = json.loads((folder / "encoder" / "config.json").read_text())
    domain_obj = build_domain(cfg, state=latest_state(folder)["domain"])  # the run's domain, its data loaded
    raw, x = RAW_AND_INPUT[domain](domain_obj, meta["preprocess"], 5)

    enc = multissl.load_encoder(folder)
    got = enc.embed(raw)
    assert got.shape == (5, 16)
    x, pad = x if isinstance(x, tuple) else (x, None)  # a variable-length domain's input comes with its padding
    with torch.no_grad():
        want = (enc.encoder(x) if pad is None else enc.encoder(x, pad=pad))[1]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # and the run folder's encoder/ path loads the same thing
    torch.testing.assert_close(multissl.load_encoder(folder / "encoder").embed(raw), got, atol=0, rtol=0)
    # and on training samples through the domain's own evaluation path, as a plugin's export is checked
    assert check_export(cfg, folder, domain_obj)["embed"] == (domain not in ("tabular", "text"))


def test_masked_objective_refuses_resnet(tiny):
    with pytest.raises(UserError, match="objective=mae masks tokens but encoder=resnet18") as e:
        run(tiny.config("encoder=resnet18", "objective=mae", "trainer.max_steps=1", tiny_encoder=False))
    assert "\n" not in str(e.value) and not (tiny.root / "run").exists()


def domain_specific_encoders():
    """(encoder, domain) pairs where the encoder's class declares it cannot take that domain's input."""
    pairs = []
    for enc in options("encoder"):
        cls = option_class("encoder", enc)
        pairs += [(enc, d) for d in DOMAINS if getattr(cls, "domains", None) and d not in cls.domains]
    return pairs


@pytest.mark.parametrize("encoder, domain", domain_specific_encoders())
def test_encoder_refuses_a_domain_it_cannot_read(tiny, encoder, domain):
    with pytest.raises(UserError, match=f"encoder={encoder} works with domain=.*not domain={domain}") as e:
        run(tiny.config(f"encoder={encoder}", f"domain={domain}", "trainer.max_steps=1", tiny_encoder=False))
    assert "\n" not in str(e.value) and not (tiny.root / "run").exists()


def test_resnet_trains_with_simclr(tiny):
    folder = tiny.run("encoder=resnet18", "objective=simclr", "data.batch_size=16", "trainer.max_steps=2",
                      "trainer.eval_samples=64", tiny_encoder=False)
    rows = tiny.metrics(folder)
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert sorted(losses) == [1, 2] and all(math.isfinite(v) for v in losses.values())
    assert "knn_acc" in rows[-1]
    enc = multissl.load_encoder(folder)
    raw = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    out = enc.embed(raw)
    assert out.shape == (3, enc.dim) and torch.isfinite(out).all()
