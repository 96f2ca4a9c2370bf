"""The three contracts — Domain, Encoder, Objective — as Protocols, with every optional member and its default
declared here once. The engine reads optional members only through `optional()`, so what a new domain or
objective may leave out is written down in one place and nowhere else.

Shapes: b batch, n tokens, k kept tokens, m masked tokens, d width. Index tensors (`keep`, `masked`) of a
variable-length batch are padded with -1 (see `multissl.encoder.gather_tokens`)."""
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from multissl.errors import UserError


@runtime_checkable
class Domain(Protocol):
    """Everything about one kind of data, nothing about objectives (docs: Extending)."""
    name: str
    num_tokens: int  # tokens per sample: the count, or the maximum for a variable-length domain
    target_dim: int  # width of one token's masked-modeling target

    def dataset(self, split: str) -> torch.utils.data.Dataset | None:
        """"train" or "test" -> items {"x": raw sample, "y": class id or -1}; None when there is no such split."""

    def views(self, x, rng: torch.Generator, n_global: int) -> list[torch.Tensor]:
        """One raw sample -> its augmented views (model input, global views first); every draw from `rng`."""

    def embedder(self, dim: int) -> nn.Module:
        """A module: batched model input -> tokens [b n dim] with positions added."""

    def mask(self, batch_size: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (keep [b k], masked [b m]) token indices; a variable-length domain takes `n_tokens=` too, the
        sample's own token count, and masks only its real tokens."""

    def target(self, x) -> torch.Tensor:
        """Batched model input -> masked-modeling target [b n target_dim]."""

    def reconstruction_loss(self, pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """pred, target [b n target_dim] (pred [b m target_dim] at `masked` alone where the domain declares
        scores_masked_only); scored at `masked` [b m] (entries -1 are padding and not scored)."""

    def eval_input(self, x):
        """One raw sample -> its un-augmented model input."""

    def preprocess(self, raw):
        """A raw batch as the user stores it -> model input (a variable-length domain returns (x, pad))."""

    def state(self) -> dict:
        """JSON-able state: everything the domain derives from its data (a tokenizer, statistics, an automatic size).
        Export and checkpoints save it; the constructor takes it back as `state=` and then derives none of it again —
        how every process but the main one, a resumed run and `load_encoder` build the domain."""


@runtime_checkable
class Encoder(Protocol):
    dim: int  # width of the pooled representation

    def __call__(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None):
        """x: batched model input; keep [b k] visible token indices; pad [b n] True = padding.
        -> (tokens [b k d] or None for a non-token encoder, pooled [b d])."""


@runtime_checkable
class Objective(Protocol):
    """An nn.Module built as `Objective(encoder, domain, **hyperparameters)`; owns heads, teacher, state."""

    def __call__(self, encoder, batch: dict, sched: dict) -> tuple[torch.Tensor, dict]:
        """-> (loss, logs): logs["rep"] is the detached pooled representation of view 0 [b d] (the online
        probe reads it); every other scalar in logs reaches metrics.jsonl as `<objective>/<key>`."""


def _stack(inputs: list) -> tuple[torch.Tensor, None]:
    return torch.stack(inputs), None


def _no_op(*args, **kwargs):
    return None


# name -> (default, what it means). A missing member reads as its default; nothing else is optional.
OPTIONAL: dict[type, dict[str, tuple[Any, str]]] = {
    Domain: {
        "num_classes": (None, "classes of the labels, for the online probe and kNN (None: no labels)"),
        "variable_length": (False, "samples have different token counts: `collate` pads them and returns the "
                                   "padding mask, `mask` takes n_tokens="),
        "collate": (_stack, "collate(inputs) -> (x, pad [b n] or None): one view of several samples as a batch; "
                            "default: torch.stack, no padding"),
        "drops_masked": (True, "the mask's masked tokens are left out of keep (MAE); False when keep covers every "
                               "token and the masked ones are replaced in the input instead (`corrupt`: VIME)"),
        "scores_masked_only": (False, "reconstruction_loss scores the masked positions alone, so masked objectives "
                                      "predict only there: its pred is [b m target_dim] in `masked`'s order (text: "
                                      "a logit per vocabulary id, too costly at every position)"),
        "corrupt": (None, "corrupt(view, masked, rng) -> view with the masked positions replaced (VIME); "
                          "objectives with corrupt_view get it as view 0 and the clean view as batch['clean']"),
        "draw": (None, "draw(x, rng, n_global) -> dict of tensors of fixed shapes: the raw sample as it travels to "
                       "the device (uint8 images, waveforms, frames) and every random parameter of its views, drawn "
                       "from rng in the loader workers; None: `views` makes the views per sample"),
        "apply": (None, "apply(drawn) -> the views (n_views x [b ...]) from draw's tensors stacked over the batch, "
                        "on the device, once per batch; deterministic, a sample's views depend on its own draws only"),
        "eval_raw": (None, "eval_raw(x) -> one stored sample in a fixed-shape raw form that `preprocess` takes "
                           "batched on the device (evaluation); None: `eval_input` per sample"),
        "local_views": (False, "offers local views (smaller crops, shorter windows: multi-crop): `views` and `draw` "
                               "take n_local=, the count after the n_global global views"),
        "default_encoder": (None, "the encoder option (configs/encoder/<name>) that reads this domain's loaded data "
                                  "best, used when the command names no encoder= and sets no encoder.* key (RL "
                                  "frames: nature_cnn); None: the config's default"),
        "downstream_metrics": (None, "downstream_metrics(embed, limit) -> dict of the domain's own held-out "
                                     "metrics; embed(dataset) -> [n d]; limit: samples per split (None = all)"),
        "future": (False, "episodes with actions (rl): `draw` takes n_future=K and returns, after the global views, "
                          "views of the next K steps of the sample's episode (its last step repeated past the end), "
                          "`action` [K ...] (the actions taken from the sample's step on) and `valid` [K] (False past "
                          "the end), which reach the batch as they are"),
        "actions": (None, "(\"discrete\", n) or (\"continuous\", d): the data's actions, for objectives that condition "
                          "on them"),
        "headline": (("knn_acc", True, True), "(metric, higher is better, is a proportion of held-out samples): "
                                              "what the end-of-run line compares with the untrained encoder"),
    },
    Encoder: {
        "supports_masking": (False, "forward takes keep= and returns tokens (masked objectives need it)"),
        "supports_padding": (False, "forward takes pad= (variable-length domains need it)"),
        "domains": (None, "names of the only domains whose input it reads (None: any)"),
        "save_pretrained": (None, "save_pretrained(folder, domain): the encoder in its own library's format "
                                  "(encoder=bert: transformers, tokenizer included); ExportedEncoder.save_pretrained"),
    },
    Objective: {
        "global_views": (2, "views per sample that are global (the rest are local crops)"),
        "local_views": (0, "local views per sample it asks for (multi-crop: DINO, SwAV); a domain without local "
                           "views gives none, and the run says so in one line"),
        "needs_token_encoder": (False, "it passes keep= to the encoder or reads its tokens"),
        "corrupt_view": (False, "view 0 arrives corrupted by the domain's `corrupt` at the masked positions"),
        "batch_statistics": (False, "the loss couples samples (negatives, variance, centring): at least 2 per "
                                    "micro-batch; BatchNorm anywhere is detected without it"),
        "after_step": (_no_op, "after_step(encoder, sched): once per applied optimizer step (EMA teachers, "
                               "queues, centres); never on a skipped step; default: nothing"),
        "projector": (None, "the module after the representation, for rankme_proj / emb_std_proj"),
        "branches": (None, "branches(encoder, batch) -> (online [n k], target [n k]): what its two branches output "
                           "(e.g. predictor vs. teacher) on un-augmented evaluation inputs, batch = views [x], keep, "
                           "masked (a fixed-seed mask), pad; read for rdm/erank_online, rdm/erank_target, rdm/diff"),
        "future_steps": (0, "steps after the sample's own whose views and actions it needs (SPR); only a domain with "
                            "`future` gives them"),
        "collapse_hint": (None, "what to change when the representation collapses, in the objective's own keys "
                                "(e.g. objective.teacher_temp=…); the collapse warning names it"),
    },
}


def optional(obj, contract: type, name: str):
    """obj's member `name` (an instance or a class), or the contract's default when it has none or sets it to
    None. Callable members default to a function that does the default thing (collate: stack; after_step:
    nothing), so callers never branch on presence."""
    if name not in OPTIONAL[contract]:
        raise KeyError(f"{name} is not an optional member of {contract.__name__}")
    value = getattr(obj, name, None)
    return OPTIONAL[contract][name][0] if value is None else value


def members(contract: type) -> list[str]:
    """The required members of a contract: its annotated attributes and its methods (not `__call__`: every
    nn.Module has it)."""
    names = [*contract.__annotations__, *vars(contract)]
    return [n for n in dict.fromkeys(names) if not n.startswith("_") and n not in OPTIONAL[contract]]


def check(obj, contract: type, what: str):
    """A one-line UserError naming the members a user's class lacks. Looked up without evaluating them (a
    domain's properties may need its data, which is not loaded yet)."""
    lacking = [n for n in members(contract) if n not in dir(type(obj)) and n not in vars(obj)]
    if lacking:
        raise UserError(f"{what} {type(obj).__name__} lacks {', '.join(lacking)} of the {contract.__name__} "
                        f"contract (multissl/contracts.py; docs/extending.md)")


def fits(domain_cls, objective_cls) -> str | None:
    """Why this objective cannot train on this domain (from their declarations, before any data is loaded), or None.
    Contract tests pair every domain with every objective that fits it."""
    if optional(objective_cls, Objective, "future_steps") and not optional(domain_cls, Domain, "future"):
        return (f"it predicts the next steps of an episode from the actions taken, and domain={domain_cls.name} has no "
                f"episodes; use domain=rl")
    return None
