"""`from multissl.sb3 import policy_kwargs, EncoderExtractor`: the code lives in multissl.domains.rl.sb3, with
the rl domain whose exported encoders it wraps."""
from multissl.domains.rl.sb3 import EncoderExtractor, policy_kwargs

__all__ = ["EncoderExtractor", "policy_kwargs"]
