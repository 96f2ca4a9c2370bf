"""`encoder=hf` for text: any transformers encoder from a local folder (BERT, RoBERTa, DistilBERT, ELECTRA, DeBERTa,
...: an AutoModel whose forward takes input_ids and attention_mask) to continue pretraining on the user's corpus,
with the folder's tokenizer (domain.tokenizer_path=<the same folder>). The model reads its [CLS] (or <s>) followed
by the text's ids, and computes its own positions, whatever its convention (RoBERTa counts from its padding id).
Masked objectives that drop tokens hide them from attention instead, so every kept token keeps its position. The
export records the model's config, not the folder: it loads where the folder is not."""
import torch
from torch import nn

from multissl.encoder import gather_tokens, kept_padding, masked_mean
from multissl.errors import UserError, reason, require
from multissl.finetune import set_trainable_layers

from ..hf import exported_config, from_config
from .bert import from_folder, save_with_tokenizer


class HFTextEncoder(nn.Module):
    supports_masking = True
    supports_padding = True
    domains = ("text",)

    def __init__(self, domain, pretrained: str | None = None, config: dict | None = None, pool: str | None = None,
                 freeze=None, lr_scale: float = 1.0, layer_decay: float | None = None):
        super().__init__()
        transformers = require("transformers", "encoder=hf")
        if pool not in (None, "cls", "mean"):
            raise UserError(f"encoder.pool must be cls or mean, got {pool!r}")
        pool = pool or "cls"
        if pretrained:
            self.model = from_folder(transformers, pretrained, domain)
        elif config:  # a model from its config, random (an export records it; its weights are loaded after)
            self.model = from_config(transformers, {"vocab_size": domain.vocab.size,
                                                    "pad_token_id": domain.vocab.pad_id, **config})
        else:
            raise UserError("encoder=hf needs encoder.pretrained=<a local transformers folder> (config.json and "
                            "weights, as save_pretrained writes them) and domain.tokenizer_path=<the same folder>")
        if domain.vocab.cls_id is None:
            raise UserError("encoder=hf reads [CLS] (or <s>) first; the tokenizer has neither: use the model's own "
                            "tokenizer (domain.tokenizer_path=<its folder>)")
        self.pool, self.cls_id, self.pad_id = pool, domain.vocab.cls_id, domain.vocab.pad_id
        self.dim = self.model.config.hidden_size
        self.probe(domain.max_length)
        set_trainable_layers(self.model, freeze, lr_scale, layer_decay)

    @torch.no_grad()
    def probe(self, max_length: int):
        """A text of domain.max_length tokens must fit the model's positions: checked once here, not mid-run."""
        ids = torch.full((1, max_length + 1), self.cls_id, dtype=torch.long)
        try:
            self.model.eval()(input_ids=ids, attention_mask=torch.ones_like(ids))
        except (IndexError, RuntimeError) as e:
            raise UserError(f"encoder.pretrained cannot read {max_length + 1} tokens ({reason(e, 100)}); set "
                            f"domain.max_length lower (the model's max_position_embeddings is "
                            f"{getattr(self.model.config, 'max_position_embeddings', '?')})") from None
        self.model.train()

    def exported_config(self, cfg: dict) -> dict:
        return exported_config(self.model, cfg)

    def save_pretrained(self, folder, domain):
        """The trained model and its tokenizer in transformers' format (AutoModel / AutoTokenizer.from_pretrained):
        last_hidden_state[:, 0] of the tokenizer's ids is the representation (with encoder.pool=cls)."""
        save_with_tokenizer(self.model, folder, domain, self.cls_id)

    def inputs(self, x, keep, pad):
        """[CLS] + ids [b 1+n] and the attention mask: padding, and tokens outside keep [b k], hidden."""
        b, n = x.shape
        pad = torch.zeros(b, n, dtype=torch.bool, device=x.device) if pad is None else pad
        seen = ~pad
        if keep is not None:  # visible: the kept positions (-1 entries go to a scratch column, cut off)
            idx = torch.where(keep < 0, n, keep)
            seen = seen & torch.zeros(b, n + 1, dtype=torch.bool, device=x.device).scatter(1, idx, True)[:, :n]
        first = torch.ones(b, 1, dtype=torch.long, device=x.device)
        ids = torch.cat([first * self.cls_id, x.masked_fill(pad, self.pad_id)], 1)
        return ids, torch.cat([first, seen.long()], 1), pad

    def tokens(self, h, keep, pad):
        """h [b 1+n d] -> the kept tokens [b k d] and their padding."""
        t = h[:, 1:]
        return (t, pad) if keep is None else (gather_tokens(t, keep), kept_padding(pad, keep))

    def forward(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None):
        """x ids [b n], keep [b k] (-1 = padding), pad [b n] -> (tokens [b k d], pooled [b d])."""
        ids, att, pad = self.inputs(x, keep, pad)
        h = self.model(input_ids=ids, attention_mask=att).last_hidden_state  # [b 1+n d]
        t, tpad = self.tokens(h, keep, pad)
        return t, (h[:, 0] if self.pool == "cls" else masked_mean(t, tpad))

    def hidden_states(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None) -> list:
        """Every layer's output tokens [b k d], first to last (data2vec's targets)."""
        ids, att, pad = self.inputs(x, keep, pad)
        out = self.model(input_ids=ids, attention_mask=att, output_hidden_states=True)
        return [self.tokens(h, keep, pad)[0] for h in out.hidden_states[1:]]
