"""RL domain: buffer format and layouts, bad buffers, episode boundaries (truncated ones too), views, the
held-out episode split, the state probe against a hand-written ridge, export, and the Nature-CNN."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import multissl
from multissl.domains import rl as R
from multissl.errors import UserError
from multissl.train import run


def write_buffer(path, obs, ends=None, truncated=None, **extra):
    """A buffer in the documented format; `ends` = indices of terminated steps, `truncated` = of truncated ones."""
    n = len(obs)
    term, trunc = np.zeros(n, bool), np.zeros(n, bool)
    term[list([] if ends is None else ends)] = True
    trunc[list([] if truncated is None else truncated)] = True
    arrays = {"obs": obs, "action": np.zeros(n, np.int64), "reward": np.ones(n, np.float32), "terminated": term,
              "truncated": trunc, **extra}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def domain_on(path, **kw):
    d = R.RLDomain(data={"path": str(path)}, **kw)
    d.dataset("train")
    return d


# ---- layouts ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, layout", [((4,), "vector"), ((84, 84), "hw"), ((64, 96, 3), "hwc"),
                                           ((84, 84, 4), "hwc"), ((4, 84, 84), "chw"), ((3, 48, 72), "chw"),
                                           ((2, 48, 72, 3), "khwc")])
def test_layout_is_detected(shape, layout):
    assert R.detect_layout(shape) == layout


@pytest.mark.parametrize("shape", [(3, 3, 3), (2, 3, 48, 72, 3), (40, 40, 40)])
def test_undetectable_layout_names_the_key_to_set(shape):
    with pytest.raises(UserError, match=r"set domain.layout="):
        R.detect_layout(shape)


def frames(n, shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.mark.parametrize("normalize", ["frame", "channel"])
@pytest.mark.parametrize("shape, to_chw", [
    ((20, 24), lambda x: x[:, None]),
    ((20, 24, 3), lambda x: x.permute(0, 3, 1, 2)),
    ((4, 20, 24), lambda x: x),
    ((2, 20, 24, 3), lambda x: x.permute(0, 1, 4, 2, 3).reshape(len(x), 6, 20, 24)),
])
def test_preprocess_matches_a_hand_computation_for_every_frame_layout(tmp_path, shape, to_chw, normalize):
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


def test_frame_normalization_zeroes_a_static_background(tmp_path):
    obs = np.full((30, 3, 20, 24), 250, np.uint8)
    obs[np.arange(30), :, 10, np.arange(30) % 24] = 0  # one dark pixel moving along a row
    d = domain_on(write_buffer(tmp_path / "b.npz", obs, ends=[9, 19]))
    x = d.preprocess(obs[:4])
    assert x[:, :, :10].abs().max() < 1e-5 and x[:, :, 11:].abs().max() < 1e-5  # the background is exactly 0
    assert x[:, :, 10].abs().max() > 1


def test_vector_observations_are_standardized(tmp_path):
    obs = np.random.default_rng(0).normal(3, 2, (40, 5)).astype(np.float32)
    d = domain_on(write_buffer(tmp_path / "b.npz", obs, ends=[9, 19, 29]))
    assert d.layout == "vector" and d.num_tokens == 5 and d.target_dim == 1
    train = obs[d.dataset("train").index.numpy()]
    want = (obs[:3] - train.mean(0)) / train.std(0, ddof=1)
    torch.testing.assert_close(d.preprocess(obs[:3]), torch.from_numpy(want), atol=1e-5, rtol=1e-5)


def test_wrong_observation_shape_at_embed_time_is_a_user_error(tmp_path):
    d = domain_on(write_buffer(tmp_path / "b.npz", frames(20, (4, 20, 24)), ends=[9]))
    with pytest.raises(UserError, match=r"do not match the buffer's \[4, 20, 24\]"):
        d.preprocess(np.zeros((2, 20, 24, 4), np.uint8))


def test_frame_size_resizes_and_patches_tile_the_frame(tmp_path):
    d = domain_on(write_buffer(tmp_path / "b.npz", frames(20, (30, 40, 3)), ends=[9]), frame_size=[24, 32])
    assert d.preprocess(frames(2, (30, 40, 3))).shape == (2, 3, 24, 32)
    assert d.patch == (12, 16) and d.grid == (2, 2)  # patches of about 12 pixels (8 and 16 tie for 32: the larger)
    assert domain_on(tmp_path / "b.npz", frame_size=[84, 84]).grid == (7, 7)
    with pytest.raises(UserError, match="does not tile"):
        domain_on(tmp_path / "b.npz", patch_size=7).embedder(16)


# ---- bad buffers ----------------------------------------------------------------------------------------------
GOOD = dict(obs=np.zeros((10, 4), np.float32), action=np.zeros(10), reward=np.zeros(10), terminated=np.zeros(10, bool),
            truncated=np.zeros(10, bool))


@pytest.mark.parametrize("key", R.REQUIRED)
def test_missing_key_is_named(tmp_path, key):
    np.savez(tmp_path / "b.npz", **{k: v for k, v in GOOD.items() if k != key})
    with pytest.raises(UserError, match=rf"has no '{key}' array \(it has: .*\); the format needs") as e:
        domain_on(tmp_path / "b.npz")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("key", ["action", "reward", "terminated", "truncated", "state", "episode"])
def test_length_mismatch_is_named(tmp_path, key):
    arrays = {**GOOD, "state": np.zeros((10, 2)), "episode": np.zeros(10, np.int64)}
    arrays[key] = arrays[key][:7]
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(UserError, match=rf"'{key}' has 7 steps but 'obs' has 10"):
        domain_on(tmp_path / "b.npz")


@pytest.mark.parametrize("arrays, message", [
    ({**GOOD, "obs": np.zeros((0, 4), np.float32)}, r"is empty \(obs holds 0 steps\)"),
    ({**GOOD, "terminated": np.full(10, 2)}, r"'terminated' must be booleans"),
    ({**GOOD, "obs": np.full((10, 4), np.nan, np.float32)}, r"'obs' holds NaN or Inf \(first at step 0\)"),
    ({**GOOD, "state": np.array([[0.0]] * 9 + [[np.inf]])}, r"'state' holds NaN or Inf \(first at step 9\)"),
    ({**GOOD, "obs": np.array(["a"] * 10)}, r"observations must be numbers"),
])
def test_bad_buffer_contents(tmp_path, arrays, message):
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(UserError, match=message):
        domain_on(tmp_path / "b.npz")


def test_unreadable_or_wrong_files(tmp_path):
    (tmp_path / "b.txt").write_text("obs")
    with pytest.raises(UserError, match="is not a replay buffer"):
        domain_on(tmp_path / "b.txt")
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read replay buffer"):
        domain_on(tmp_path / "c.npz")
    np.savez(tmp_path / "o.npz", **{**GOOD, "obs": np.array([{"a": 1}] * 10, dtype=object)})
    with pytest.raises(UserError, match="cannot read replay buffer .*no Python objects"):
        domain_on(tmp_path / "o.npz")
    with pytest.raises(UserError, match="reads one replay buffer file"):
        domain_on(tmp_path)


def test_bad_buffer_exits_2_with_one_line_and_keeps_checkpoints(tmp_path):
    np.savez(tmp_path / "b.npz", **{k: v for k, v in GOOD.items() if k != "reward"})
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000001.pt"
    ckpt.write_bytes(b"kept")
    out = subprocess.run([sys.executable, "-m", "multissl.train", "domain=rl", f"data.path={tmp_path / 'b.npz'}",
                          f"run.dir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "'reward'" in out.stderr
    assert ckpt.read_bytes() == b"kept"


# ---- episodes and temporal positives ---------------------------------------------------------------------------
def test_episode_bounds_from_flags_ids_and_buffer_end():
    term = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0], bool)  # episode 0 ends at 2 (terminated)
    trunc = np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 0], bool)  # episode 1 ends at 4 (truncated: a time limit)
    ids = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3, 3])  # a new id at 7 without a flag is a boundary too
    seg, first, last = R.episode_bounds(term, trunc, ids)
    assert seg.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]  # the last episode runs to the end of the buffer
    assert first.tolist() == [0, 0, 0, 3, 3, 5, 5, 7, 7, 7]
    assert last.tolist() == [2, 2, 2, 4, 4, 6, 6, 9, 9, 9]


@pytest.mark.parametrize("offsets", [(1, 1), (1, 3), (2, 6), (0, 4)])
def test_temporal_neighbour_stays_in_the_episode(offsets):
    rng = torch.Generator().manual_seed(0)
    for first, last in [(0, 0), (5, 6), (10, 14), (20, 40)]:
        for i in range(first, last + 1):
            for _ in range(20):
                j = R.temporal_neighbour(i, first, last, offsets, rng)
                assert first <= j <= last
                assert abs(j - i) <= offsets[1]
                if max(last - i, i - first) >= offsets[1]:  # every k of the range fits in some direction
                    assert offsets[0] <= abs(j - i)


def test_views_never_cross_an_episode_boundary(tmp_path):
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


def test_zero_offset_gives_two_augmentations_of_one_step(tmp_path):
    obs = np.stack([np.arange(20), np.zeros(20)], 1).astype(np.float32)
    d = domain_on(write_buffer(tmp_path / "b.npz", obs, ends=[9]), noise_std=0.0, temporal_offset=[0, 0])
    a, b = d.views(torch.tensor(4), torch.Generator().manual_seed(0), 2)
    torch.testing.assert_close(a, b)


def test_frame_stack_views_shift_every_frame_alike(tmp_path):
    base = frames(1, (20, 24))[0]
    stack = np.stack([base, base, base])[None].repeat(10, 0)  # [10 3 20 24], three identical frames per stack
    d = domain_on(write_buffer(tmp_path / "b.npz", stack, ends=[4]), intensity=0.0, shift=3)
    for s in range(5):
        v = d.views(torch.tensor(2), torch.Generator().manual_seed(s), 2)[0]
        x = v * torch.tensor(d.std).view(-1, 1, 1) + torch.tensor(d.mean)  # the mean frame [3 20 24]
        torch.testing.assert_close(x[0], x[1], atol=1e-5, rtol=0)
        torch.testing.assert_close(x[0], x[2], atol=1e-5, rtol=0)


def test_random_shift_is_a_crop_of_the_replicate_padded_frame():
    x = torch.rand(2, 9, 11)
    padded = torch.nn.functional.pad(x[None], (3, 3, 3, 3), mode="replicate")[0]
    crops = {(dy, dx): padded[:, dy:dy + 9, dx:dx + 11] for dy in range(7) for dx in range(7)}
    hits = set()
    for s in range(60):
        y = R.random_shift(x, 3, torch.Generator().manual_seed(s))
        match = [k for k, c in crops.items() if torch.equal(c, y)]
        assert len(match) == 1
        hits.add(match[0])
    assert len(hits) > 20  # the offsets vary
    assert torch.equal(R.random_shift(x, 0, torch.Generator()), x)


def test_intensity_scales_the_whole_view_within_two_sigma():
    x = torch.rand(3, 8, 8) + 0.1
    for s in range(20):
        y = R.intensity(x, 0.05, torch.Generator().manual_seed(s))
        ratio = y / x
        assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))
        assert 0.9 - 1e-6 <= ratio.flatten()[0] <= 1.1 + 1e-6


# ---- split and state probe ---------------------------------------------------------------------------------------
def test_held_out_episodes_are_whole_and_fixed(tmp_path):
    obs = frames(100, (4, 20, 24))
    ends = list(range(9, 100, 10))  # 10 episodes
    d1 = domain_on(write_buffer(tmp_path / "b.npz", obs, ends=ends))
    tr, te = d1.dataset("train").index.numpy(), d1.dataset("test").index.numpy()
    assert set(d1.episode[tr]).isdisjoint(d1.episode[te]) and len(set(d1.episode[te])) == 2
    assert sorted([*tr, *te]) == list(range(100))
    assert np.array_equal(domain_on(tmp_path / "b.npz").dataset("test").index.numpy(), te)


def test_one_episode_has_no_held_out_split_and_no_probe(tmp_path):
    d = domain_on(write_buffer(tmp_path / "b.npz", frames(20, (4, 20, 24)), state=np.zeros((20, 2))))
    assert d.dataset("test") is None and d.downstream_metrics(lambda ds: torch.zeros(len(ds), 3)) == {}


def ridge_r2_reference(e_tr, s_tr, e_te, s_te, alpha):
    """By hand: centre features on the training mean and divide them all by one number, the training RMS
    around it; closed-form ridge w = (X'X + alpha I)^-1 X'y on centred targets, intercept = training mean;
    R^2 = 1 - SS_res / SS_tot per variable."""
    mu = e_tr.mean(0)
    rms = np.sqrt(((e_tr - mu) ** 2).sum() / e_tr.size)
    x_tr, x_te = (e_tr - mu) / rms, (e_te - mu) / rms
    w = np.linalg.solve(x_tr.T @ x_tr + alpha * np.eye(x_tr.shape[1]), x_tr.T @ (s_tr - s_tr.mean(0)))
    pred = x_te @ w + s_tr.mean(0)
    return 1 - ((s_te - pred) ** 2).sum(0) / ((s_te - s_te.mean(0)) ** 2).sum(0)


def test_state_r2_matches_a_hand_written_ridge():
    g = np.random.default_rng(0)
    e = g.normal(size=(300, 6)) * np.array([1, 2, 3, 0.5, 1, 10])  # dimensions on different scales
    s = np.stack([e @ g.normal(size=6), e[:, 0] ** 2, g.normal(size=300)], 1)  # linear, nonlinear, unrelated
    got = R.state_r2(e[:200], s[:200], e[200:], s[200:], alpha=3.0)
    np.testing.assert_allclose(got, ridge_r2_reference(e[:200], s[:200], e[200:], s[200:], 3.0), rtol=1e-6, atol=1e-8)
    assert got[0] > 0.99 and got[1] < 0.2 and got[2] < 0.05  # invariants: readable, not linear, noise
    # the probe does not depend on the embedding's units
    np.testing.assert_allclose(R.state_r2(e[:200] * 1e3 + 5, s[:200], e[200:] * 1e3 + 5, s[200:], 3.0), got, rtol=1e-6)


def test_state_r2_survives_units_that_almost_never_fire_in_training():
    """ReLU embeddings have units active on a handful of training steps; standardizing each unit by its own tiny
    std made their test activations huge outliers (R^2 far below 0 on a trained Nature-CNN). Scaled as a whole,
    they keep a small weight."""
    g = np.random.default_rng(0)
    e = g.normal(size=(400, 8))
    s = e[:, :2] @ np.array([[1.0, 0.5], [-0.5, 1.0]])
    rare = np.zeros((400, 4))
    rare[:2] = 1e-3 * g.random((2, 4))   # active on 2 of the 300 training rows, barely
    rare[300:] = g.random((100, 4))      # active on every held-out row
    e = np.concatenate([e, rare], 1)
    got = R.state_r2(e[:300], s[:300], e[300:], s[300:], alpha=1.0)
    assert (got > 0.95).all(), got


def test_downstream_metrics_name_each_state_variable(tmp_path):
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
def test_run_logs_the_state_probe_and_exports_an_encoder_for_stored_observations(tiny, tmp_path):
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
def test_vector_buffers_train_with_the_mlp_and_the_transformer(tiny, tmp_path, objective):
    obs = np.random.default_rng(0).normal(size=(80, 4)).astype(np.float32)
    path = write_buffer(tmp_path / "b.npz", obs, ends=list(range(9, 80, 10)), state=obs)
    encoders = ["encoder=transformer"] if objective == "mae" else ["encoder=transformer", "encoder=mlp"]
    for i, enc in enumerate(encoders):
        folder = tiny.run("domain=rl", f"objective={objective}", enc, f"data.path={path}", "trainer.max_steps=2",
                          "data.batch_size=16", name=f"r{i}", tiny_encoder=enc == "encoder=transformer")
        assert "state_r2_mean" in tiny.metrics(folder)[-1]
        assert multissl.load_encoder(folder).embed(obs[:3]).shape[0] == 3


def test_nature_cnn_trains_on_frame_stacks_and_refuses_what_it_cannot_read(tiny, tmp_path):
    stacks = write_buffer(tmp_path / "s.npz", frames(60, (4, 44, 44)), ends=[19, 39])
    folder = tiny.run("domain=rl", "objective=byol", "encoder=nature_cnn", "encoder.dim=32", f"data.path={stacks}",
                      "trainer.max_steps=2", "data.batch_size=16", tiny_encoder=False)
    enc = multissl.load_encoder(folder)
    assert enc.embed(frames(3, (4, 44, 44))).shape == (3, 32)
    vectors = write_buffer(tmp_path / "v.npz", np.zeros((20, 4), np.float32), ends=[9])
    with pytest.raises(UserError, match="encoder=nature_cnn reads frames.*use encoder=mlp"):
        run(tiny.config("domain=rl", "encoder=nature_cnn", f"data.path={vectors}", "trainer.max_steps=1",
                        tiny_encoder=False))
    small = write_buffer(tmp_path / "t.npz", frames(20, (4, 20, 24)), ends=[9])
    with pytest.raises(UserError, match="at least 36x36"):
        run(tiny.config("domain=rl", "encoder=nature_cnn", f"data.path={small}", "trainer.max_steps=1",
                        tiny_encoder=False))
    with pytest.raises(UserError, match="objective=mae masks tokens but encoder=nature_cnn"):
        run(tiny.config("domain=rl", "encoder=nature_cnn", "objective=mae", "trainer.max_steps=1", tiny_encoder=False))


def test_evaluate_reads_another_buffer_of_the_same_observations(tiny, tmp_path):
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


def test_default_buffer_is_collected_once_and_a_damaged_cache_again(tmp_path, capsys):
    small = {"steps": 40, "size": [24, 36]}
    d = R.RLDomain(default=small, cache_dir=str(tmp_path))
    d.dataset("train")
    (cached,) = list(tmp_path.glob("*.npz"))
    assert d.obs_shape == [3, 24, 36] and d.state_names[0] == "cart_position" and "collecting" in capsys.readouterr().err
    R.RLDomain(default=small, cache_dir=str(tmp_path)).dataset("train")
    assert "collecting" not in capsys.readouterr().err  # read from the cache
    cached.write_bytes(b"damaged")
    again = R.RLDomain(default=small, cache_dir=str(tmp_path))
    again.dataset("train")
    assert "collecting the default buffer again" in capsys.readouterr().err
    assert np.array_equal(again._buf["obs"], d._buf["obs"])  # the same seeded collection
