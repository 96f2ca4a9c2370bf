"""multissl.sb3: an exported rl encoder as a stable-baselines3 features extractor."""
import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")
from stable_baselines3 import PPO  # noqa: E402

import multissl  # noqa: E402
from multissl.cli import load_config  # noqa: E402
from multissl.domains.rl.collect import collect, make_env  # noqa: E402
from multissl.domains.rl.sb3 import EncoderExtractor, policy_kwargs  # noqa: E402
from multissl.errors import UserError  # noqa: E402
from multissl.train import run  # noqa: E402

TINY = ["domain=rl", "objective=byol", "trainer.max_steps=1", "data.batch_size=32", "encoder.dim=16",
        "encoder.depth=1", "encoder.heads=2", "trainer.eval_every=0"]


@pytest.fixture(autouse=True)
def _sb3_logs(tmp_path, monkeypatch):
    """SB3 makes an (empty) log folder per learner, by default in the system's temporary folder."""
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A one-step run on a small default CartPole buffer: [3 48 72] uint8 stacks of grayscale frames, the
    default's settings but fewer steps (cached on its own); the tests only read it."""
    return run(load_config([*TINY, "domain.default.steps=1200", f"run.dir={tmp_path_factory.mktemp('sb3') / 'run'}"]))


@pytest.fixture(scope="module")
def encoder(folder):
    """The run's export, loaded once: loading rebuilds the domain from its saved statistics (a mean frame), which
    is slow; the tests only read it."""
    return multissl.load_encoder(folder)


def observations(env, n: int = 8) -> np.ndarray:
    obs, _ = env.reset(seed=0)
    out = [obs]
    for _ in range(n - 1):
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        out.append(env.reset()[0] if term or trunc else obs)
    return np.stack(out)


def agent(folder, env_config: dict, trainable=False) -> PPO:
    env = make_env(**env_config)
    return PPO("MlpPolicy", env, policy_kwargs=policy_kwargs(folder, trainable), n_steps=64, batch_size=32,
               n_epochs=1, seed=0, device="cpu")


def learn(model) -> tuple[dict, dict]:
    """(encoder, heads) weights before and after a 128-step learn."""
    def snapshot():
        enc = {k: v.clone() for k, v in model.policy.features_extractor.encoder.state_dict().items()}
        heads = {k: v.clone() for k, v in model.policy.state_dict().items() if not k.startswith(
            ("features_extractor.", "pi_features_extractor.", "vf_features_extractor."))}
        return enc, heads
    before = snapshot()
    model.learn(total_timesteps=128)
    return before, snapshot()


def changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_features_equal_embed(folder, encoder):
    obs = observations(make_env(**encoder.domain.env_config))  # [8 3 48 72] uint8
    extractor = EncoderExtractor(make_env(**encoder.domain.env_config).observation_space, folder)
    feats = extractor(torch.as_tensor(obs).float())  # SB3 hands over float copies (normalize_images=False)
    assert feats.shape == (8, encoder.dim) == (8, extractor.features_dim)
    torch.testing.assert_close(feats, encoder.embed(obs), atol=1e-5, rtol=0)
    # inside a PPO policy too: its orthogonal init (ortho_init=True) must leave the pretrained weights alone
    policy = agent(folder, encoder.domain.env_config).policy
    torch.testing.assert_close(policy.extract_features(policy.obs_to_tensor(obs)[0]), encoder.embed(obs),
                               atol=1e-5, rtol=0)


def test_frozen_encoder_does_not_learn(folder, encoder):
    model = agent(folder, encoder.domain.env_config)
    (enc0, heads0), (enc1, heads1) = learn(model)
    assert not changed(enc0, enc1)
    assert changed(heads0, heads1)
    extractor = model.policy.features_extractor
    model.policy.set_training_mode(True)
    assert not extractor.encoder.training  # SB3's .train() leaves a frozen encoder in eval mode
    assert not any(p.requires_grad for p in extractor.encoder.parameters())


def test_trainable_encoder_learns(folder, encoder):
    (enc0, _), (enc1, _) = learn(agent(folder, encoder.domain.env_config, trainable=True))
    assert changed(enc0, enc1)


def test_hwc_frames_transposed_by_sb3(tmp_path):
    """Colour frames stored [H W C]: SB3's VecTransposeImage hands them over as [C H W]."""
    collect("CartPole-v1", 200, out=tmp_path / "rgb.npz", size=[40, 60], grayscale=False, frame_stack=1)
    folder = run(load_config([*TINY, f"data.path={tmp_path / 'rgb.npz'}", f"run.dir={tmp_path / 'run'}"]))
    encoder = multissl.load_encoder(folder)
    assert encoder.domain.layout == "hwc" and encoder.domain.obs_shape == [40, 60, 3]
    model = agent(folder, encoder.domain.env_config)
    assert model.observation_space.shape == (3, 40, 60)  # SB3 did wrap the env in VecTransposeImage
    obs = observations(make_env(**encoder.domain.env_config), 4)  # [4 40 60 3] uint8
    chw, _ = model.policy.obs_to_tensor(obs)  # [4 3 40 60], transposed as VecTransposeImage does
    torch.testing.assert_close(model.policy.extract_features(chw), encoder.embed(obs), atol=1e-5, rtol=0)


def test_wrong_observation_space(folder):
    env = make_env("CartPole-v1", pixels=False)  # state vectors [4], not the encoder's frame stacks
    with pytest.raises(UserError, match=r"\[4\].*\[3, 48, 72\].*make_env"):
        EncoderExtractor(env.observation_space, folder)
