"""trainer.precision: `auto` (bf16 on a CUDA GPU that has it, else float32), `no`, `bf16` or `fp16` autocast on the
training device — a CPU included (accelerate leaves fp16 off on a CPU without a word, so the engine does its own
autocast) — and for fp16 a gradient scaler whose every step, skipped or not, updates the scale: an overflow skips the
optimizer step, halves the scale, and training goes on."""
import torch

DTYPES = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve(name: str, device) -> str:
    """trainer.precision=auto -> bf16 on a CUDA device that computes in it (tensor cores: Ampere and later), else no
    (float32: CPUs and older GPUs, where bf16 is emulated or slow); any other name as it is."""
    if name != "auto":
        return name
    return "bf16" if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported() else "no"


class Precision:
    def __init__(self, name: str, device: torch.device):
        name = resolve(name, device)
        if name not in DTYPES:
            from multissl.errors import UserError
            raise UserError(f"trainer.precision={name} is not one of: auto, {', '.join(DTYPES)}")
        self.name, self.device, self.dtype = name, torch.device(device), DTYPES[name]
        self.scaler = torch.amp.GradScaler(self.device.type) if name == "fp16" else None

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def backward(self, loss: torch.Tensor):
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale(self, optimizer):
        """Gradients back to their true size before they are clipped and checked (fp16)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer, apply: bool):
        """The optimizer step when `apply` (the step's loss and gradients are finite); with fp16 the scale is updated
        either way — skipping it is what made the next step fail with 'unscale_() has already been called'."""
        if self.scaler is None:
            if apply:
                optimizer.step()
            return
        if apply:
            self.scaler.step(optimizer)
        self.scaler.update()

    def overflowed(self, loss_finite: bool) -> bool:
        """A skipped fp16 step whose loss was finite: the gradients overflowed at this scale, which the scaler
        handles (the scale is halved), while the scale is still at least 1."""
        return self.scaler is not None and loss_finite and self.scaler.get_scale() >= 1

    def logs(self) -> dict:
        return {} if self.scaler is None else {"loss_scale": float(self.scaler.get_scale())}
