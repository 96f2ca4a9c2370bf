"""`encoder=bert`: a `transformers` BERT as the text backbone, built from a config (no weights downloaded) or from a
user's local checkpoint (`encoder.pretrained=<folder>`: domain-adaptive pretraining on their corpus), and written
back with `save_pretrained` (tokenizer included) so `transformers.AutoModel.from_pretrained(folder)` loads it.
The model reads [CLS] followed by the text's ids, as the saved tokenizer writes them."""
from pathlib import Path

import torch
from torch import nn

from multissl.encoder import kept_padding, masked_mean
from multissl.errors import UserError, require


class BertEncoder(nn.Module):
    supports_masking = True
    supports_padding = True
    domains = ("text",)

    def __init__(self, domain, dim: int = 64, depth: int = 3, heads: int = 4, mlp_ratio: float = 2.0,
                 pool: str = "cls", dropout: float = 0.1, pretrained: str | None = None,
                 checkpointing: bool = False):
        super().__init__()
        transformers = require("transformers", "encoder=bert")
        if pool not in ("cls", "mean"):
            raise UserError(f"encoder.pool must be cls or mean, got {pool!r}")
        self.pool, vocab = pool, domain.vocab
        if vocab.cls_id is None:
            raise UserError("encoder=bert needs a [CLS] (or <s>) token in the tokenizer; add it or unset "
                            "domain.tokenizer_path")
        self.cls_id = vocab.cls_id
        if pretrained:
            self.bert = from_folder(transformers, pretrained, domain)
        else:
            cfg = transformers.BertConfig(vocab_size=vocab.size, hidden_size=dim, num_hidden_layers=depth,
                                          num_attention_heads=heads, intermediate_size=int(dim * mlp_ratio),
                                          max_position_embeddings=domain.max_length + 1, pad_token_id=vocab.pad_id,
                                          hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
            self.bert = transformers.BertModel(cfg, add_pooling_layer=False)
        self.dim = self.bert.config.hidden_size
        if checkpointing:  # each layer recomputed in the backward pass of a training forward (transformers' own)
            enable = getattr(self.bert, "activation_checkpointing_enable", None)  # newer transformers; older: the other
            (enable or self.bert.gradient_checkpointing_enable)({"use_reentrant": False})

    def inputs(self, x, keep, pad):
        """[CLS] + the kept ids [b 1+k], their positions (the CLS at 0, token i at 1 + i) and attention mask."""
        b, n = x.shape
        keep = torch.arange(n, device=x.device).expand(b, n) if keep is None else keep
        pad = torch.zeros(b, n, dtype=torch.bool, device=x.device) if pad is None else pad
        kpad = kept_padding(pad, keep)  # [b k]
        ids = torch.gather(x, 1, keep.clamp_min(0)).masked_fill(kpad, self.bert.config.pad_token_id or 0)
        first = torch.zeros(b, 1, dtype=torch.long, device=x.device)
        return (torch.cat([first + self.cls_id, ids], 1), torch.cat([first, keep.clamp_min(0) + 1], 1),
                torch.cat([first + 1, (~kpad).long()], 1), kpad)

    def forward(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None):
        """x ids [b n], keep [b k] (-1 = padding), pad [b n] -> (tokens [b k d], pooled [b d])."""
        ids, pos, att, kpad = self.inputs(x, keep, pad)
        h = self.bert(input_ids=ids, position_ids=pos, attention_mask=att).last_hidden_state  # [b 1+k d]
        return h[:, 1:], (h[:, 0] if self.pool == "cls" else masked_mean(h[:, 1:], kpad))

    def hidden_states(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None) -> list:
        """Every layer's output tokens [b k d], first to last (data2vec's targets)."""
        ids, pos, att, _ = self.inputs(x, keep, pad)
        out = self.bert(input_ids=ids, position_ids=pos, attention_mask=att, output_hidden_states=True)
        return [h[:, 1:] for h in out.hidden_states[1:]]

    def save_pretrained(self, folder, domain):
        """The model and its tokenizer in transformers' format: AutoModel / AutoTokenizer.from_pretrained(folder)
        give the encoder's tokens (last_hidden_state[:, 0] is its CLS representation)."""
        save_with_tokenizer(self.bert, folder, domain, self.cls_id)


def save_with_tokenizer(model, folder, domain, cls_id: int):
    """A transformers model and the domain's tokenizer, made to write [CLS] + the text's ids as the encoder reads
    them, saved together."""
    transformers = require("transformers", "save_pretrained")
    from tokenizers import Tokenizer, processors
    tok = Tokenizer.from_str(domain.vocab.json)
    cls = tok.id_to_token(cls_id)
    tok.post_processor = processors.TemplateProcessing(single=f"{cls} $A", pair=f"{cls} $A $B:1",
                                                       special_tokens=[(cls, cls_id)])
    tok.enable_truncation(domain.max_length + 1)
    v = domain.vocab
    names = {k: tok.id_to_token(i) for k, i in (("pad_token", v.pad_id), ("mask_token", v.mask_id),
                                                 ("cls_token", v.cls_id), ("sep_token", v.sep_id)) if i is not None}
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=domain.max_length + 1, **names)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)


def from_folder(transformers, folder: str, domain):
    """A local checkpoint (config.json and weights) whose vocabulary and positions fit the domain's tokenizer."""
    from multissl.domains.hf import load_folder
    model, p = load_folder(transformers, folder), Path(folder).expanduser()
    own = p / "tokenizer.json"
    if own.is_file() and own.read_text(encoding="utf-8") != domain.vocab.json:
        raise UserError(f"encoder.pretrained={folder} comes with its own tokenizer; add domain.tokenizer_path={folder} "
                        f"so the ids match its embeddings")
    if model.config.vocab_size < domain.vocab.size:
        raise UserError(f"encoder.pretrained={folder} has {model.config.vocab_size} token embeddings but the tokenizer "
                        f"has {domain.vocab.size} ids; set domain.tokenizer_path to the checkpoint's tokenizer")
    if getattr(model.config, "max_position_embeddings", domain.max_length + 1) < domain.max_length + 1:
        raise UserError(f"encoder.pretrained={folder} has {model.config.max_position_embeddings} positions; set "
                        f"domain.max_length={model.config.max_position_embeddings - 1} or less")
    return model
