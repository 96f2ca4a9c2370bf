"""Whether video views are mirrored, chosen from the clips when domain.flip is unset: clips whose content moves keep
the direction of motion (no flip), still clips are flipped as images are; a set value wins; the choice is printed,
saved in the state and never re-derived by a domain built from a state."""
import numpy as np
import pytest
import torch

from multissl.domains.video import VideoDomain, recipe

SMALL = {"n": 120, "frames": 12, "size": 32}


def still_clips(n=40, t=12, s=24, seed=0) -> np.ndarray:
    """uint8 [n t s s 3]: a random scene per clip, the same in every frame but for sensor noise."""
    rng = np.random.default_rng(seed)
    scene = rng.integers(40, 216, (n, 1, s, s, 3))
    return np.clip(scene + rng.integers(-6, 7, (n, t, s, s, 3)), 0, 255).astype(np.uint8)


def test_drift_is_one_for_still_noisy_clips_and_grows_with_motion():
    x = torch.from_numpy(still_clips()).permute(0, 1, 4, 2, 3).float() / 255  # [n t c s s]
    assert recipe.drift(x) == pytest.approx(1.0, abs=0.1)
    moving = torch.zeros(4, 8, 1, 24, 24)
    for t in range(8):
        moving[:, t, :, 8:14, 2 * t:2 * t + 6] = 1.0  # a square sliding right
    assert recipe.drift(moving) >= 3 > recipe.MOVING


def test_moving_clips_keep_their_direction_and_still_clips_are_flipped(tmp_path, capsys):
    digits = VideoDomain(default=SMALL, cache_dir=str(tmp_path))
    digits.dataset("train")
    assert digits.flip == 0.0 and "the clips move: views keep the direction of motion" in capsys.readouterr().err
    path = tmp_path / "still.npz"
    np.savez(path, video=still_clips())
    still = VideoDomain(frames=8, data={"path": str(path)}, cache_dir=str(tmp_path / "c"))
    still.dataset("train")
    assert still.flip == 0.5 and "the clips barely move" in capsys.readouterr().err
    assert still.state()["views"] == {"flip": 0.5}


def test_a_set_flip_wins_and_a_state_brings_its_choice(tmp_path, capsys):
    set_ = VideoDomain(default=SMALL, cache_dir=str(tmp_path), flip=0.25)
    set_.dataset("train")
    assert set_.flip == 0.25 and "domain.flip" not in capsys.readouterr().err
    first = VideoDomain(default=SMALL, cache_dir=str(tmp_path))
    first.dataset("train")
    other = VideoDomain(default=SMALL, cache_dir=str(tmp_path), state=first.state())
    other.dataset("train")
    assert other.flip == first.flip == 0.0
    old = {k: v for k, v in first.state().items() if k != "views"}  # saved before the choice existed
    assert VideoDomain(default=SMALL, cache_dir=str(tmp_path), state=old).flip == recipe.BEFORE
