"""The contracts: a small required core for a domain, an encoder and an objective, and the capabilities a domain
opts into only when it has them (masked modelling, batched views, variable length, local views, episodes, its own
metrics) — each a Protocol a domain meets by having its members (`isinstance(domain, Masked)`). An objective
declares the capabilities it needs (`needs`); `compatible` is the one rule the CLI, the engine, --help and the tests
ask. Every optional member and its default is declared here once and read only through `optional()`.

Shapes: b batch, n tokens, k kept tokens, m masked tokens, d width. Index tensors (`keep`, `masked`) of a
variable-length batch are padded with -1 (see `multissl.encoder.gather_tokens`)."""
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from multissl.errors import UserError


class _Present(type(Protocol)):
    """isinstance looks members up without evaluating them: a domain's properties may need data not loaded yet."""

    def __instancecheck__(cls, obj):
        return cls.__dict__.get("_is_protocol", False) and all(present(obj, n) for n in members(cls))


@runtime_checkable
class Domain(Protocol, metaclass=_Present):
    """Everything about one kind of data, nothing about objectives (docs: Extending). The constructor takes the
    recipe's keywords, `data=` (the run's data section) and `state=` (what `state()` returned: derive none of it)."""
    name: str
    num_tokens: int  # tokens per sample: the count, or the maximum for a variable-length domain

    def dataset(self, split: str) -> torch.utils.data.Dataset | None:
        """"train" or "test" -> items {"x": raw sample, "y": class id or -1}; None when there is no such split."""

    def views(self, x, rng: torch.Generator, n_global: int) -> list[torch.Tensor]:
        """One raw sample -> its augmented views (model input, global views first); every draw from `rng`."""

    def embedder(self, dim: int) -> nn.Module:
        """A module: batched model input -> tokens [b n dim] with positions added."""

    def eval_input(self, x):
        """One raw sample -> its un-augmented model input."""

    def preprocess(self, raw):
        """A raw batch as the user stores it -> model input (a variable-length domain returns (x, pad))."""

    def state(self) -> dict:
        """JSON-able state: everything the domain derives from its data (a tokenizer, statistics, an automatic size).
        Export and checkpoints save it; the constructor takes it back as `state=`."""


# ---- capabilities a domain opts into ----------------------------------------------------------------------------
@runtime_checkable
class Masked(Protocol, metaclass=_Present):
    """Masked modelling (mae, data2vec, ijepa, simclr_mae)."""
    target_dim: int  # width of one token's target

    def mask(self, batch_size: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (keep [b k], masked [b m]) token indices; a VariableLength domain takes `n_tokens=` too."""

    def target(self, x) -> torch.Tensor:
        """Batched model input -> target [b n target_dim]."""

    def reconstruction_loss(self, pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """pred, target [b n target_dim] (pred [b m target_dim] with scores_masked_only) scored at `masked` [b m]
        (-1 entries are padding)."""


@runtime_checkable
class BatchedViews(Protocol, metaclass=_Present):
    """Views made on the device a batch at a time: the loader workers only draw."""

    def draw(self, x, rng: torch.Generator, n_global: int) -> dict:
        """-> dict of fixed-shape tensors: the raw sample as it travels (uint8 images, waveforms) and every random
        parameter of its views, drawn from rng."""

    def apply(self, drawn: dict) -> list[torch.Tensor]:
        """draw's tensors stacked over the batch -> the views (n_views x [b ...]); deterministic."""


@runtime_checkable
class VariableLength(Protocol, metaclass=_Present):
    """Samples of different token counts (text): batches are padded; `mask` takes n_tokens=."""

    def collate(self, inputs: list) -> tuple[torch.Tensor, torch.Tensor]:
        """One view of several samples -> (x, pad [b n], True = padding)."""


@runtime_checkable
class LocalViews(Protocol, metaclass=_Present):
    """Multi-crop: `views` and `draw` take n_local=, the local views after the global ones."""
    local_views: bool  # offered for this data (image: when a local crop still holds a few patches)


@runtime_checkable
class Episodes(Protocol, metaclass=_Present):
    """Samples are steps of episodes with actions (rl): `views`/`draw` take n_future=K and give, after the global
    views, views of the next K steps (the last step repeated past the end), `action` [K ...] and `valid` [K]."""
    actions: tuple  # ("discrete", n) or ("continuous", d)


@runtime_checkable
class Ordered(Protocol, metaclass=_Present):
    """Tokens in an order: time for audio, video and text, rows of patches for images (CPC predicts along it)."""

    def steps(self, tokens: torch.Tensor, pad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """tokens [b n d] at every position (pad [b n], True = padding) -> (steps [b T d], pad [b T] or None): the
        tokens pooled per step of the order, the first step first."""


@runtime_checkable
class Downstream(Protocol, metaclass=_Present):
    """Held-out metrics of its own, beside kNN (rl: a probe of the true state)."""

    def downstream_metrics(self, embed, limit: int | None) -> dict:
        """embed(dataset) -> [n d]; limit: samples per split (None = all) -> {metric: value}."""


@runtime_checkable
class Encoder(Protocol, metaclass=_Present):
    dim: int  # width of the pooled representation

    def __call__(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None):
        """x: batched model input; keep [b k] visible token indices; pad [b n] True = padding.
        -> (tokens [b k d] or None for a non-token encoder, pooled [b d])."""


@runtime_checkable
class Objective(Protocol, metaclass=_Present):
    """An nn.Module built as `Objective(encoder, domain, **hyperparameters)`; owns heads, teacher, state."""

    def __call__(self, encoder, batch: dict, sched: dict) -> tuple[torch.Tensor, dict]:
        """-> (loss, logs): logs["rep"] is the detached pooled representation of view 0 [b d] (the online
        probe reads it); every other scalar in logs reaches metrics.jsonl as `<objective>/<key>`."""


class Sharded(Protocol, metaclass=_Present):
    """Its data can be written as shards (python -m multissl.shards), and data.path= the shards reads them back with
    the same samples, order and labels (domains.shards: Records out, Shards in)."""

    @staticmethod
    def records(data: dict) -> dict:
        """The data section -> {split: domains.shards.Records}, without loading the domain (no statistics)."""


CAPABILITIES = {Masked: "masked modelling (mask, target, reconstruction_loss)", BatchedViews: "batched views",
                VariableLength: "variable-length samples", LocalViews: "local views",
                Episodes: "episodes with actions", Ordered: "tokens in an order (time, rows)",
                Downstream: "metrics of its own", Sharded: "shards"}


def _same(cfg):
    return cfg


def _no_op(*args, **kwargs):
    return None


# name -> (default, what it means). A missing member reads as its default; nothing else is optional.
OPTIONAL: dict[type, dict[str, tuple[Any, str]]] = {
    Domain: {
        "num_classes": (None, "classes of the labels, for the online probe and kNN (None: no labels)"),
        "eval_raw": (None, "eval_raw(x) -> one stored sample in a fixed-shape raw form that `preprocess` takes "
                           "batched on the device (evaluation); None: `eval_input` per sample"),
        "default_encoder": (None, "default_encoder(data, **domain keys) -> the encoder option that reads this data "
                                  "best (RL frames: nature_cnn), or (option, why), asked when the config is composed "
                                  "and the command names no encoder; None: the config's default"),
        "default_objective": (None, "default_objective(data, **domain keys) -> the objective option this data trains "
                                    "best with (RL buffers: spr), or (option, why), asked when the config is composed "
                                    "and the command names no objective; None: the config's default"),
        "raw_features": (None, "raw_features(x, pad) -> [b f] features of an evaluation batch (as the evaluation "
                               "loader gives it) for the raw-input baseline, what a user would try before any "
                               "encoder (raw pixels, TF-IDF); None: the flattened model input, padding zeroed"),
    },
    Masked: {
        "drops_masked": (True, "the masked tokens are left out of keep (MAE); False: keep covers every token and the "
                               "masked ones are replaced in the input instead (BERT, VIME's `corrupt`)"),
        "scores_masked_only": (False, "reconstruction_loss scores the masked positions alone, so pred is "
                                      "[b m target_dim] in `masked`'s order (text: a logit per vocabulary id)"),
        "corrupt": (None, "corrupt(view, masked, rng) -> view with the masked positions replaced (VIME); objectives "
                          "with corrupt_view get it as view 0 and the clean view as batch['clean']"),
    },
    Downstream: {"headline": (("knn_acc", True, True), "(metric, higher is better, is a proportion of held-out "
                                                       "samples): what the end-of-run line compares with the "
                                                       "untrained encoder")},
    Encoder: {
        "supports_masking": (False, "forward takes keep= and returns tokens (masked objectives need it)"),
        "supports_padding": (False, "forward takes pad= (variable-length domains need it)"),
        "supports_mask_tokens": (False, "forward takes masked= [b m] and mask_token= [d]: the tokens at `masked` enter "
                                        "as the mask token at their positions, and every position is encoded "
                                        "(SimMIM, iBOT)"),
        "domains": (None, "names of the only domains whose input it reads (None: any)"),
        "base_lr": (None, "the optim.base_lr it trains best with, used when the command sets none (None: the "
                          "config's)"),
        "save_pretrained": (None, "save_pretrained(folder, domain): the encoder in its own library's format "
                                  "(encoder=bert: transformers)"),
        "hidden_states": (None, "hidden_states(x, keep=None, pad=None) -> every block's output [b n d], the targets "
                                "data2vec regresses"),
        "exported_config": (_same, "exported_config(cfg: dict) -> the encoder config its export records, built again "
                                   "by load_encoder (encoder=timm: the resolved architecture, no checkpoint path: "
                                   "the export holds the weights)"),
    },
    Objective: {
        "needs": ((), "the domain capabilities it cannot train without (Masked, Episodes); a tuple among them is "
                      "any one of its capabilities"),
        "global_views": (2, "views per sample that are global (the rest are local crops)"),
        "local_views": (0, "local views per sample it asks for (multi-crop); a domain without LocalViews gives "
                           "none, and the run says so in one line"),
        "needs_token_encoder": (False, "it passes keep= to the encoder or reads its tokens"),
        "corrupt_view": (False, "view 0 arrives corrupted by the domain's `corrupt` at the masked positions"),
        "mask_tokens": (False, "where the domain drops masked tokens, its encoder sees them as its own mask token "
                               "instead (the encoder's masked=, mask_token=; encoders with supports_mask_tokens)"),
        "mask_ratio": (None, "the share of a sample's tokens it masks at most: where the domain's mask hides more, a "
                             "random part of it (drawn after the mask) stays visible; None: the domain's mask as it is"),
        "masked_views": (1, "views (the first ones) that get a mask each where the domain drops masked tokens: "
                            "batch keep and masked are then [views*b k] and [views*b m], view-major; a domain "
                            "that corrupts (`corrupt`) masks view 0 alone"),
        "batch_statistics": (False, "the loss couples samples (negatives, variance, centring): at least 2 per "
                                    "micro-batch; BatchNorm anywhere is detected without it"),
        "after_step": (_no_op, "after_step(encoder, sched): once per applied optimizer step (EMA teachers, "
                               "queues, centres); never on a skipped step"),
        "projector": (None, "the module after the representation, for rankme_proj / emb_std_proj"),
        "branches": (None, "branches(encoder, batch) -> (online [n k], target [n k]): its two branches' outputs on "
                           "evaluation inputs, for rdm/erank_online, rdm/erank_target, rdm/diff"),
        "future_steps": (0, "steps after the sample's own whose views and actions it needs (with Episodes)"),
        "collapse_hint": (None, "what to change when the representation collapses, in the objective's own keys"),
    },
}
for _cap in CAPABILITIES:
    OPTIONAL.setdefault(_cap, {})


def optional(obj, contract: type, name: str):
    """obj's member `name` (an instance or a class), or the contract's default when it has none or sets it to
    None. Callable members default to a function that does the default thing (collate: stack; after_step:
    nothing), so callers never branch on presence."""
    if name not in OPTIONAL[contract]:
        raise KeyError(f"{name} is not an optional member of {contract.__name__}")
    value = getattr(obj, name, None)
    return OPTIONAL[contract][name][0] if value is None else value


def members(contract: type) -> list[str]:
    """The required members of a contract or capability: its annotated attributes and its methods (not `__call__`:
    every nn.Module has it)."""
    names = [*contract.__annotations__, *vars(contract)]
    return [n for n in dict.fromkeys(names) if not n.startswith("_") and n not in OPTIONAL.get(contract, {})]


def present(obj, name: str) -> bool:
    """obj (an instance or a class) has `name`, looked up without evaluating it."""
    return name in dir(obj if isinstance(obj, type) else type(obj)) or name in getattr(obj, "__dict__", {})


def has(obj, capability: type) -> bool:
    """obj (an instance, or a class before any data is loaded) has every member of the capability."""
    return all(present(obj, n) for n in members(capability))


def check(obj, contract: type, what: str):
    """A one-line UserError naming the members a user's class lacks."""
    lacking = [n for n in members(contract) if not present(obj, n)]
    if lacking:
        raise UserError(f"{what} {type(obj).__name__} lacks {', '.join(lacking)} of the {contract.__name__} "
                        f"contract (multissl/contracts.py; docs/contracts.md)")


def compatible(domain, objective, encoder=None, names: dict | None = None) -> str | None:
    """Why these classes (or instances) cannot train together — from their declarations, before any data is
    loaded — or None. `names`: how the command named them (default: the domain's `name`, the class names)."""
    def named(g, obj):
        return (names or {}).get(g) or getattr(obj, "name", None) or getattr(obj, "__name__", type(obj).__name__)
    d, o, e = named("domain", domain), named("objective", objective), named("encoder", encoder)
    lacking = [c for c in optional(objective, Objective, "needs")
               if not any(has(domain, one) for one in (c if isinstance(c, tuple) else (c,)))]
    if lacking:
        fix = "; use domain=rl" if Episodes in lacking else ""
        named_caps = [" or ".join(CAPABILITIES[one] for one in (c if isinstance(c, tuple) else (c,))) for c in lacking]
        return (f"objective={o} cannot train on domain={d}: it needs {' and '.join(named_caps)}, "
                f"which domain={d} does not offer{fix}")
    if encoder is None:
        return None
    supported = optional(encoder, Encoder, "domains")
    if supported is not None and getattr(domain, "name", d) not in supported:
        return f"encoder={e} works with domain={' or domain='.join(supported)}, not domain={d}; use encoder=transformer"
    if optional(objective, Objective, "needs_token_encoder") and not optional(encoder, Encoder, "supports_masking"):
        return f"objective={o} masks tokens but encoder={e} has none; use encoder=transformer"
    # a domain that corrupts its input in place (drops_masked False on the class: text) needs no mask token
    if (optional(objective, Objective, "mask_tokens") and optional(domain, Masked, "drops_masked") is not False
            and not optional(encoder, Encoder, "supports_mask_tokens")):
        return f"objective={o} gives the encoder mask tokens, which encoder={e} does not take; use encoder=transformer"
    if has(domain, VariableLength) and not optional(encoder, Encoder, "supports_padding"):
        return (f"domain={d} has samples of different lengths but encoder={e} needs a fixed size; use "
                f"encoder=transformer")
    return None
