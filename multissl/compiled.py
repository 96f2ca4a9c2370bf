"""trainer.compile=true: torch.compile the networks the step calls (the encoder and the objective's heads), in place.

Each module's own `forward` is compiled, not the module (`nn.Module.compile` or a wrapper): hooks registered on it
(FSDP2's all-gathers, DDP's) stay eager around the compiled code, and state_dict keys, checkpoints and the export
are those of an eager run."""
import torch
from torch import nn


def compile_model(model: nn.Module, dynamic: bool) -> None:
    """Compile `model.encoder` and every called submodule of `model.objective` (projectors, predictors, heads, an
    EMA teacher's nets), recursing through containers that are never called (ModuleList, ModuleDict, modules without
    a forward of their own such as EMATeacher). The objective itself is not compiled: it takes the encoder and the
    batch's dict, and its Python (view pairing, queues) stays eager.

    Evaluation (eval mode) runs the eager forward. dynamic=True (a domain with variable-length samples, e.g. text):
    every input dimension is symbolic from the first compilation, so a new sequence length or batch size never
    compiles again. dynamic=False: shapes are static until one changes, which compiles once more with that dimension
    symbolic (torch.compile's `dynamic=None`; its `dynamic=False` would compile once per shape, up to its recompile
    limit)."""
    mode = True if dynamic else None
    _compile(model.encoder, mode)
    for child in model.objective.children():
        _compile_called(child, mode)


def _compile_called(module: nn.Module, dynamic: bool | None) -> None:
    if type(module).forward is nn.Module.forward:  # a container: what it holds is called, never itself
        for child in module.children():
            _compile_called(child, dynamic)
    else:
        _compile(module, dynamic)


def _compile(module: nn.Module, dynamic: bool | None) -> None:
    # an instance attribute shadows the class's forward: nn.Module.__call__ runs its hooks, then the compiled code;
    # a module met twice (a head shared by two objects) is compiled once
    if "forward" not in vars(module):
        module.forward = _in_training(module, torch.compile(module.forward, dynamic=dynamic), module.forward)


def _in_training(module: nn.Module, compiled, eager):
    """The compiled forward while the module trains, the eager one in eval mode: an evaluation's other batch sizes and
    its no-grad graphs would each compile once more, for a pass that is a small part of a run."""
    def forward(*args, **kwargs):
        return (compiled if module.training else eager)(*args, **kwargs)
    forward.compiled = compiled
    return forward
