"""`python -m multissl.collect` and `from multissl.collect import make_env, collect`: the code lives in
multissl.domains.rl.collect, with the rl domain whose buffers it writes."""
from multissl.domains.rl.collect import collect, env_config, load_policy, main, make_env

__all__ = ["collect", "env_config", "load_policy", "main", "make_env"]

if __name__ == "__main__":
    main()
