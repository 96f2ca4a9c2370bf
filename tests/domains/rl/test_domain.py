"""RL domain: preprocessing of every layout, views (temporal positives inside episodes, shifts, intensity),
the held-out episode split, the state probe's metrics, and runs through the engine, export and evaluate."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import multissl
import multissl.configs
from multissl.data import stack_draws
from multissl.domains.rl.views import shifted, temporal_neighbour
from multissl.errors import UserError


# ---- preprocessing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", ["frame", "channel"])
@pytest.mark.parametrize("shape, to_chw", [
    ((20, 24), lambda x: x[:, None]),
    ((20, 24, 3), lambda x: x.permute(0, 3, 1, 2)),
    ((4, 20, 24), lambda x: x),
    ((2, 20, 24, 3), lambda x: x.permute(0, 1, 4, 2, 3).reshape(len(x), 6, 20, 24)),
])
def test_preprocess_matches_a_hand_computation_for_every_frame_layout(tmp_path, shape, to_chw, normalize, domain_on,
                                                                      frames, write_buffer):
    obs = frames(30, shape)
    d = domain_on(write_buffer(tmp_path / "b.npz", obs, ends=[9, 19]), normalize=normalize)
    # statistics by hand, on the training steps only (held-out episodes excluded): the mean frame [c h w] or
    # the mean of each channel, then each channel's root-mean-square deviation from it
    train = d.dataset("train").index.numpy()
    assert np.isin(train, np.arange(30)).all() and len(train) < 30
    t = to_chw(torch.from_numpy(obs[train]).float() / 255)  # [n c h w]
    mean = t.mean(0) if normalize == "frame" else t.mean((0, 2, 3)).view(-1, 1, 1)
    std = (t - mean).pow(2).mean((0, 2, 3)).sqrt().view(-1, 1, 1)
    raw = torch.from_numpy(obs[:5])
    want = (to_chw(raw.float() / 255) - mean) / std
    torch.testing.assert_close(d.preprocess(raw), want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(d.preprocess(obs[3]), want[3:4], atol=1e-4, rtol=1e-4)  # one observation, no batch
    torch.testing.assert_close(d.preprocess(raw.float()), want, atol=1e-4, rtol=1e-4)  # SB3's float copies


def test_frame_normalization_zeroes_a_static_background(tmp_path, domain_on, write_buffer):
    obs = np.full((30, 3, 20, 24), 250, np.uint8)
    obs[np.arange(30), :, 10, np.arange(30) % 24] = 0  # one dark pixel moving along a row
    d = domain_on(write_buffer(tmp_path / "b.npz", obs, ends=[9, 19]))
    x = d.preprocess(obs[:4])
    assert x[:, :, :10].abs().max() < 1e-5 and x[:, :, 11:].abs().max() < 1e-5  # the background is exactly 0
    assert x[:, :, 10].abs().max() > 1


def test_vector_observations_are_standardized(tmp_path, domain_on, write_buffer):
    obs = np.random.default_rng(0).normal(3, 2, (40, 5)).astype(np.float32)
    d = domain_on(write_buffer(tmp_path / "b.npz", obs, ends=[9, 19, 29]))
    assert d.layout == "vector" and d.num_tokens == 5 and d.target_dim == 1
    train = obs[d.dataset("train").index.numpy()]
    want = (obs[:3] - train.mean(0)) / train.std(0, ddof=1)
    torch.testing.assert_close(d.preprocess(obs[:3]), torch.from_numpy(want), atol=1e-5, rtol=1e-5)


def test_wrong_observation_shape_at_embed_time_is_a_user_error(tmp_path, domain_on, frames, write_buffer):
    d = domain_on(write_buffer(tmp_path / "b.npz", frames(20, (4, 20, 24)), ends=[9]))
    with pytest.raises(UserError, match=r"do not match the buffer's \[4, 20, 24\]"):
        d.preprocess(np.zeros((2, 20, 24, 4), np.uint8))


def test_frame_size_resizes_and_patches_tile_the_frame(tmp_path, domain_on, frames, write_buffer):
    d = domain_on(write_buffer(tmp_path / "b.npz", frames(20, (30, 40, 3)), ends=[9]), frame_size=[24, 32])
    assert d.preprocess(frames(2, (30, 40, 3))).shape == (2, 3, 24, 32)
    assert d.patch == (12, 16) and d.grid == (2, 2)  # patches of about 12 pixels (8 and 16 tie for 32: the larger)
    assert domain_on(tmp_path / "b.npz", frame_size=[84, 84]).grid == (7, 7)
    with pytest.raises(UserError, match="does not tile"):
        domain_on(tmp_path / "b.npz", patch_size=7).embedder(16)


# ---- temporal positives and views -------------------------------------------------------------------------
@pytest.mark.parametrize("offsets", [(1, 1), (1, 3), (2, 6), (0, 4)])
def test_temporal_neighbour_stays_in_the_episode(offsets):
    rng = torch.Generator().manual_seed(0)
    for first, last in [(0, 0), (5, 6), (10, 14), (20, 40)]:
        for i in range(first, last + 1):
            for _ in range(20):
                j = temporal_neighbour(i, first, last, offsets, rng)
                assert first <= j <= last
                assert abs(j - i) <= offsets[1]
                if max(last - i, i - first) >= offsets[1]:  # every k of the range fits in some direction
                    assert offsets[0] <= abs(j - i)


def test_views_never_cross_an_episode_boundary(tmp_path, domain_on, write_buffer):
    # obs = [step index, episode] so each view says where it came from; short, terminated and truncated
    # episodes, an episode of one step, and an unfinished last one
    lengths = [1, 2, 5, 3, 8, 1, 6]
    ep = np.repeat(np.arange(len(lengths)), lengths)
    n = len(ep)
    obs = np.stack([np.arange(n), ep], 1).astype(np.float32)
    ends = np.cumsum(lengths) - 1
    d = domain_on(write_buffer(tmp_path / "b.npz", obs, ends=ends[[0, 2, 4]], truncated=ends[[1, 3, 5]]),
                  noise_std=0.0, temporal_offset=[1, 4], test_fraction=0.0)
    std, mean = np.array(d.std), np.array(d.mean)
    seen = set()
    for i in range(n):
        for s in range(30):
            views = d.views(torch.tensor(i), torch.Generator().manual_seed(s), 3)
            steps = [int(round(v.numpy()[0] * std[0] + mean[0])) for v in views]
            assert steps[0] == i
            for j in steps[1:]:
                assert ep[j] == ep[i], f"view of step {j} (episode {ep[j]}) paired with step {i} (episode {ep[i]})"
                if lengths[ep[i]] > 1:
                    assert j != i and abs(j - i) <= 4
                seen.add(j - i)
    assert seen >= {-4, -3, -2, -1, 1, 2, 3, 4, 0}  # both directions, the whole range, and 1-step episodes


def test_future_steps_stay_in_the_episode_with_the_actions_taken_from_the_step(tmp_path, domain_on, write_buffer):
    # obs = [step index, 0]; episodes of 4, 1 and 5 steps (terminated, truncated, unfinished); action = 10 * step
    lengths, k = [4, 1, 5], 3
    n = sum(lengths)
    obs = np.stack([np.arange(n), np.zeros(n)], 1).astype(np.float32)
    ends = np.cumsum(lengths) - 1
    path = write_buffer(tmp_path / "b.npz", obs, ends=ends[:1], truncated=ends[1:2])
    np.savez(path, **{**np.load(path), "action": np.arange(n, dtype=np.int64) * 10})
    d = domain_on(path, noise_std=0.0, test_fraction=0.0)
    std, mean = np.array(d.std), np.array(d.mean)
    last = np.repeat(ends, lengths)
    for i in range(n):
        drawn = d.draw(torch.tensor(i), torch.Generator().manual_seed(i), 1, n_future=k)
        views = d.apply({name: v[None] for name, v in drawn.items()})
        steps = [int(round(v[0, 0].item() * std[0] + mean[0])) for v in views]
        ahead = [min(i + j, last[i]) for j in range(1, k + 1)]
        assert steps == [i, *ahead]  # the step, then the next k of its episode, its last step repeated past the end
        assert drawn["valid"].tolist() == [i + j <= last[i] for j in range(1, k + 1)]
        assert drawn["action"].tolist() == [10 * min(i + j, last[i]) for j in range(k)]  # a_t leads to step t+1
    assert d.actions == ("discrete", 10 * (n - 1) + 1)


def test_zero_offset_gives_two_augmentations_of_one_step(tmp_path, domain_on, write_buffer):
    obs = np.stack([np.arange(20), np.zeros(20)], 1).astype(np.float32)
    d = domain_on(write_buffer(tmp_path / "b.npz", obs, ends=[9]), noise_std=0.0, temporal_offset=[0, 0])
    a, b = d.views(torch.tensor(4), torch.Generator().manual_seed(0), 2)
    torch.testing.assert_close(a, b)


def test_frame_stack_views_shift_every_frame_alike(tmp_path, domain_on, frames, write_buffer):
    base = frames(1, (20, 24))[0]
    stack = np.stack([base, base, base])[None].repeat(10, 0)  # [10 3 20 24], three identical frames per stack
    d = domain_on(write_buffer(tmp_path / "b.npz", stack, ends=[4]), intensity=0.0, shift=3)
    for s in range(5):
        v = d.views(torch.tensor(2), torch.Generator().manual_seed(s), 2)[0]
        x = v * torch.tensor(d.std).view(-1, 1, 1) + torch.tensor(d.mean)  # the mean frame [3 20 24]
        torch.testing.assert_close(x[0], x[1], atol=1e-5, rtol=0)
        torch.testing.assert_close(x[0], x[2], atol=1e-5, rtol=0)


def test_shift_is_each_samples_crop_of_the_replicate_padded_frame():
    x = torch.rand(5, 2, 9, 11)
    offsets = torch.tensor([[0, 0], [6, 6], [3, 1], [0, 5], [2, 4]])
    got = shifted(x, offsets, 3)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        padded = torch.nn.functional.pad(x[i:i + 1], (3, 3, 3, 3), mode="replicate")[0]
        assert torch.equal(got[i], padded[:, dy:dy + 9, dx:dx + 11])
    assert torch.equal(shifted(x, offsets, 0), x)


def test_draws_shift_offsets_in_range_and_intensity_within_two_sigma(tmp_path, domain_on, frames, write_buffer):
    d = domain_on(write_buffer(tmp_path / "b.npz", frames(30, (12, 16, 3))), intensity=0.05, shift=3)
    hits = set()
    for s in range(40):
        drawn = d.draw(torch.tensor(5), torch.Generator().manual_seed(s), 2)
        assert drawn["obs"].dtype == torch.uint8 and drawn["obs"].shape == (2, 12, 16, 3)  # as stored
        assert ((0.9 - 1e-6 <= drawn["gain"]) & (drawn["gain"] <= 1.1 + 1e-6)).all()
        assert ((drawn["shift"] >= 0) & (drawn["shift"] <= 6)).all()
        hits |= set(map(tuple, drawn["shift"].tolist()))
    assert len(hits) > 20  # the offsets vary


def test_batched_apply_equals_each_sample_applied_alone_and_the_hand_computed_view(tmp_path, domain_on, frames,
                                                                                  write_buffer):
    d = domain_on(write_buffer(tmp_path / "b.npz", frames(30, (12, 16, 3)), ends=[14]), intensity=0.05, shift=2)
    items = [d.draw(torch.tensor(i), torch.Generator().manual_seed(i), 2) for i in range(6)]
    drawn = stack_draws(items)
    views = d.apply(drawn)
    for i in range(6):
        for v, alone in zip(views, d.apply({k: t[i:i + 1] for k, t in drawn.items()})):
            torch.testing.assert_close(v[i], alone[0], atol=1e-6, rtol=0)
        x = drawn["obs"][i, 1].permute(2, 0, 1).float() / 255 * drawn["gain"][i, 1]  # hwc frame -> [c h w]
        dy, dx = drawn["shift"][i, 1].tolist()
        x = torch.nn.functional.pad(x[None], (2, 2, 2, 2), mode="replicate")[0, :, dy:dy + 12, dx:dx + 16]
        torch.testing.assert_close(views[1][i], d.normalize(x), atol=1e-5, rtol=0)


# ---- split and state probe ---------------------------------------------------------------------------------------
def test_held_out_episodes_are_whole_and_fixed(tmp_path, domain_on, frames, write_buffer):
    obs = frames(100, (4, 20, 24))
    ends = list(range(9, 100, 10))  # 10 episodes
    d1 = domain_on(write_buffer(tmp_path / "b.npz", obs, ends=ends))
    tr, te = d1.dataset("train").index.numpy(), d1.dataset("test").index.numpy()
    assert set(d1.episode[tr]).isdisjoint(d1.episode[te]) and len(set(d1.episode[te])) == 2
    assert sorted([*tr, *te]) == list(range(100))
    assert np.array_equal(domain_on(tmp_path / "b.npz").dataset("test").index.numpy(), te)


def test_one_episode_has_no_held_out_split_and_no_probe(tmp_path, domain_on, frames, write_buffer):
    d = domain_on(write_buffer(tmp_path / "b.npz", frames(20, (4, 20, 24)), state=np.zeros((20, 2))))
    assert d.dataset("test") is None and d.downstream_metrics(lambda ds: torch.zeros(len(ds), 3)) == {}


def test_downstream_metrics_name_each_state_variable(tmp_path, domain_on, write_buffer):
    g = np.random.default_rng(0)
    state = g.normal(size=(100, 2)).astype(np.float32)
    obs = np.concatenate([state, g.normal(size=(100, 1))], 1).astype(np.float32)
    d = domain_on(write_buffer(tmp_path / "b.npz", obs, ends=list(range(9, 100, 10)), state=state,
                               state_names=np.array(["x", "v"])))
    m = d.downstream_metrics(lambda ds: d.preprocess(obs[ds.index.numpy()]))  # embedding = the standardized obs
    assert set(m) == {"state_r2/x", "state_r2/v", "state_r2_mean"}
    assert m["state_r2/x"] > 0.99 and m["state_r2/v"] > 0.99
    assert m["state_r2_mean"] == pytest.approx((m["state_r2/x"] + m["state_r2/v"]) / 2)
    no_state = domain_on(write_buffer(tmp_path / "c.npz", obs, ends=list(range(9, 100, 10))))
    assert no_state.downstream_metrics(lambda ds: torch.zeros(len(ds), 3)) == {}


# ---- through the engine ---------------------------------------------------------------------------------------
def test_run_logs_the_state_probe_and_exports_an_encoder_for_stored_observations(tiny, tmp_path, frames, write_buffer):
    g = np.random.default_rng(0)
    obs = frames(120, (40, 40, 3))
    state = g.normal(size=(120, 3)).astype(np.float32)
    path = write_buffer(tmp_path / "b.npz", obs, ends=list(range(19, 120, 20)), state=state)
    folder = tiny.run("domain=rl", "objective=vicreg", f"data.path={path}", "trainer.max_steps=2",
                      "trainer.eval_every=1", "data.batch_size=16")
    evals = [r for r in tiny.metrics(folder) if "state_r2_mean" in r]
    assert [r["step"] for r in evals] == [1, 2]  # at eval intervals and at the end
    assert {"state_r2/state_0", "state_r2/state_1", "state_r2/state_2"} <= set(evals[-1])
    enc = multissl.load_encoder(folder)
    assert json.loads((folder / "encoder" / "config.json").read_text())["preprocess"]["layout"] == "hwc"
    d = enc.domain
    x = (torch.from_numpy(obs[:4]).permute(0, 3, 1, 2).float() / 255 - torch.tensor(d.mean)[None]) \
        / torch.tensor(d.std).view(1, -1, 1, 1)  # minus the mean frame [3 40 40], / each channel's std
    with torch.no_grad():
        want = enc.encoder(x)[1]
    torch.testing.assert_close(enc.embed(obs[:4]), want, atol=1e-5, rtol=0)  # uint8 [b h w c], as stored


@pytest.mark.parametrize("objective", ["byol", "mae"])
def test_vector_buffers_train_with_the_mlp_and_the_transformer(tiny, tmp_path, objective, write_buffer):
    obs = np.random.default_rng(0).normal(size=(80, 4)).astype(np.float32)
    path = write_buffer(tmp_path / "b.npz", obs, ends=list(range(9, 80, 10)), state=obs)
    encoders = ["encoder=transformer"] if objective == "mae" else ["encoder=transformer", "encoder=mlp"]
    for i, enc in enumerate(encoders):
        folder = tiny.run("domain=rl", f"objective={objective}", enc, f"data.path={path}", "trainer.max_steps=2",
                          "data.batch_size=16", name=f"r{i}", tiny_encoder=enc == "encoder=transformer")
        assert "state_r2_mean" in tiny.metrics(folder)[-1]
        assert multissl.load_encoder(folder).embed(obs[:3]).shape[0] == 3


def test_evaluate_reads_another_buffer_of_the_same_observations(tiny, tmp_path, frames, write_buffer):
    from multissl.evaluate import evaluate_run
    g = np.random.default_rng(0)
    path = write_buffer(tmp_path / "a.npz", frames(60, (4, 20, 24)), ends=[19, 39], state=g.normal(size=(60, 2)))
    folder = tiny.run("domain=rl", "objective=simclr", f"data.path={path}", "trainer.max_steps=1", "data.batch_size=16")
    other = write_buffer(tmp_path / "b.npz", frames(50, (4, 20, 24), seed=1), ends=list(range(9, 50, 10)),
                         state=g.normal(size=(50, 2)))
    out = evaluate_run(folder, data={"path": str(other)})
    assert {"state_r2/state_0", "state_r2/state_1", "state_r2_mean", "rankme"} <= set(out)
    wrong = write_buffer(tmp_path / "c.npz", frames(50, (3, 20, 24)), ends=[9])
    with pytest.raises(UserError, match=r"the buffer's observations are \[3, 20, 24\], the encoder was trained on "
                                        r"\[4, 20, 24\]"):
        evaluate_run(folder, data={"path": str(wrong)})


def test_buffers_train_spr_unless_the_command_or_the_run_it_continues_chooses(tmp_path, capsys):
    """Every buffer records its episodes' actions, so `domain=rl` alone trains SPR (the buffer suite's choice) and
    says why; objective= or an objective.* key (the default's) keeps the command's, and a run made with another
    objective continues with it."""
    from multissl.cli import load_config
    cfg = load_config(["domain=rl"])
    assert cfg.meta.objective == "spr" and cfg.objective._target_.endswith("SPR")
    assert ("multissl: objective=spr, domain=rl's choice for this data: the buffer records each episode's actions"
            in capsys.readouterr().err)
    for chosen, want in ((["objective=byol"], "byol"), (["objective.temperature=0.2"], "simclr")):
        assert load_config(["domain=rl", *chosen]).meta.objective == want
    made = tmp_path / "run"
    made.mkdir()
    OmegaConf.save({"meta": {"objective": "simclr", "encoder": "nature_cnn"}}, made / "config.yaml")
    assert load_config(["domain=rl", f"run.dir={made}"]).meta.objective == "simclr"
    assert "as the run in" in capsys.readouterr().err


def test_frames_default_to_nature_cnn_unless_the_command_chooses(tmp_path, capsys, write_buffer):
    """The plain `domain=rl objective=byol` on frames gets the encoder the docs recommend, decided when the config is
    composed (from the buffer's header: no data is loaded); any encoder choice (encoder=, an encoder.* key), masked
    objectives and state vectors keep theirs. The encoder's learning rate comes from its class, not its YAML."""
    from multissl.cli import load_config
    from multissl.domains.rl import NatureCNN
    cfg = load_config(["domain=rl", "objective=byol"])
    assert cfg.meta.encoder == "nature_cnn" and cfg.encoder._target_.endswith("NatureCNN")
    assert cfg.optim.base_lr == NatureCNN.base_lr and "encoder=nature_cnn" in capsys.readouterr().err
    for chosen in (["encoder=transformer"], ["encoder.depth=1"], ["objective=mae"]):
        assert load_config(["domain=rl", *chosen]).meta.encoder == "transformer"
    assert load_config(["domain=rl", "objective=byol", "optim.base_lr=0.01"]).optim.base_lr == 0.01
    vectors = write_buffer(tmp_path / "cartpole.npz", obs=np.zeros((40, 4), np.float32))
    assert load_config(["domain=rl", f"data.path={vectors}"]).meta.encoder == "transformer"
    frames = write_buffer(tmp_path / "frames.npz", obs=np.zeros((40, 3, 48, 48), np.uint8))
    assert load_config(["domain=rl", f"data.path={frames}"]).meta.encoder == "nature_cnn"
    assert "optim" not in OmegaConf.load(Path(multissl.configs.__file__).parent / "encoder" / "nature_cnn.yaml")
