"""The rl domain (`domain=rl`): replay buffers -> observations -> tokens, and the RL tooling around it.

    buffer.py      the buffer format, its layouts, reading and checking, the cached default buffer
    domain.py      RLDomain: preprocessing, temporal and pixel views, tokens, masks, the state probe
    nature_cnn.py  the DQN encoder (`encoder=nature_cnn`)
    collect.py     `python -m multissl.collect`: gymnasium envs -> buffers, and make_env for agents
    sb3.py         an exported encoder as a stable-baselines3 features extractor (`multissl.sb3`)

sb3.py needs stable-baselines3 and is not imported here."""
from ..probes import state_r2
from .buffer import (DEFAULT_BUFFER, FORMAT_HELP, LAYOUTS, NDIM, REQUIRED, Steps, default_buffer, detect_layout,
                     episode_bounds, read_buffer)
from .domain import RLDomain, shifted, temporal_neighbour
from .nature_cnn import NatureCNN

__all__ = ["RLDomain", "NatureCNN", "state_r2", "DEFAULT_BUFFER", "FORMAT_HELP", "LAYOUTS", "NDIM", "REQUIRED",
           "Steps", "default_buffer", "detect_layout", "episode_bounds", "read_buffer", "shifted",
           "temporal_neighbour"]
