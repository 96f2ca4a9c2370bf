"""What the video domain chooses from the clips it loads, when the setting is left unset (null): whether views may
be mirrored. A horizontal flip turns a clip moving right into one moving left, so an encoder trained on flipped views
learns to ignore the direction of motion; clips whose content moves keep it (no flip), clips that barely move get
the image recipe's flip. A set value always wins; the choice and its reason are printed once."""
import torch

MOVING = 1.2  # far / near frame difference from which the clips count as moving (static clips with noise: 1.0)
BEFORE = 0.5  # the flip every run trained with before the choice: a state saved then resumes with it


def drift(x: torch.Tensor) -> float:
    """Clips float [n t c s s] -> how much more the last frame differs from the first than the second does: about 1
    for still clips (sensor noise alike in both), more where content moves across the frame."""
    near = (x[:, 1] - x[:, 0]).abs().mean()
    far = (x[:, -1] - x[:, 0]).abs().mean()
    return float(far / near) if near > 0 else 1.0


def choose_flip(x: torch.Tensor, flip) -> tuple[float, str | None]:
    """(flip, the line saying what was chosen and why, or None when it was set) from sample clips [n t c s s]."""
    if flip is not None:
        return flip, None
    if x.shape[1] < 2:
        return BEFORE, None  # single frames: nothing moves
    ratio = drift(x)
    moving = ratio >= MOVING
    flip = 0.0 if moving else 0.5
    why = ("the clips move: views keep the direction of motion (a mirrored clip moves the other way)" if moving
           else "the clips barely move: views are mirrored as images are")
    return flip, (f"multissl: {why}; the last of {x.shape[1]} frames differs {ratio:.2f}x as much from the first as "
                  f"the second does: domain.flip={flip:g}; set domain.flip to choose")
