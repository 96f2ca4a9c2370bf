"""Per-step values. The engine evaluates these each step and hands the numbers to the objective in `sched`;
an objective derives its own schedules (a teacher temperature, a queue start) from sched["step"] and
sched["total_steps"] with the same helpers."""
import math


def cosine(step: int, total: int, start: float, end: float, warmup: int = 0, warmup_from: float = 0.0) -> float:
    """Linear warmup from `warmup_from` to `start` over `warmup` steps, then cosine from `start` to `end`."""
    if step < warmup:
        return warmup_from + (start - warmup_from) * step / warmup
    span = max(total - warmup, 1)
    t = min(max(step - warmup, 0) / span, 1.0)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))


def linear(step: int, steps: int, start: float, end: float) -> float:
    """From `start` at step 0 to `end` at step `steps`, then `end` (a warm-up: DINO's teacher temperature)."""
    if steps <= 0 or step >= steps:
        return end
    return start + (end - start) * step / steps


def scaled_lr(base_lr: float, batch_size: int, rule: str = "linear") -> float:
    """Goyal et al. linear scaling `base_lr * batch / 256`; `sqrt` for adaptive optimizers at large batch."""
    if rule == "linear":
        return base_lr * batch_size / 256
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size / 256)
    if rule == "none":
        return base_lr
    raise ValueError(f"optim.scale_rule must be linear, sqrt or none, got {rule!r}")


def step_values(step: int, total: int, optim_cfg, ema_cfg, lr: float) -> dict:
    """Everything an objective may need this step (never epochs or the trainer)."""
    warmup = min(optim_cfg.warmup_steps, max(total - 1, 0))
    return {
        "step": step,
        "total_steps": total,
        "progress": step / max(total, 1),
        "lr": cosine(step, total, lr, lr * optim_cfg.min_lr_ratio, warmup),
        "wd": cosine(step, total, optim_cfg.weight_decay, optim_cfg.weight_decay_end),
        # BYOL: tau = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2
        "ema": cosine(step, total, ema_cfg.start, ema_cfg.end),
    }
