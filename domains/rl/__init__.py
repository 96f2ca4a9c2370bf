"""The rl domain (`domain=rl`): replay buffers -> observations -> tokens, and the RL tooling around it.

    buffer.py      the buffer format, its layouts, reading and checking, the cached default buffer
    mmap.py        buffers on disk memory-mapped: a folder of .npy as it is, a .npz through a copy in the cache
    formats.py     Minari datasets read into that format; stable-baselines3 pickles refused
    observations.py  stored observations -> float frames or vectors, their statistics, the default encoder choice
    views.py       temporal positives inside episodes, DrQ shifts, intensity jitter, state-vector noise
    tokens.py      patches of frames (or one token per state feature) and the embedder
    evaluation.py  the held-out episodes and the ridge probe of the true state
    domain.py      RLDomain: its recipe, data and state, thin members over the modules above
    nature_cnn.py  the DQN encoder (`encoder=nature_cnn`)
    collect.py     `python -m multissl.collect`: gymnasium envs -> buffers, and make_env for agents
    sb3.py         an exported encoder as a stable-baselines3 features extractor (`multissl.sb3`)

sb3.py needs stable-baselines3 and is not imported here."""
from ..probes import state_r2
from .buffer import (DEFAULT_BUFFER, FORMAT_HELP, LAYOUTS, NDIM, REQUIRED, Steps, default_buffer, detect_layout,
                     episode_bounds, read_buffer)
from .domain import RLDomain
from .views import shifted, temporal_neighbour
from .nature_cnn import NatureCNN

__all__ = ["RLDomain", "NatureCNN", "state_r2", "DEFAULT_BUFFER", "FORMAT_HELP", "LAYOUTS", "NDIM", "REQUIRED",
           "Steps", "default_buffer", "detect_layout", "episode_bounds", "read_buffer", "shifted",
           "temporal_neighbour"]
