"""The tabular domain (`domain=tabular`): tables -> encoded rows -> one token per feature.

    table.py    reading CSV / parquet / HF / scikit-learn tables, schema inference, encoding
    views.py    SCARF corruption, SubTab subsets, gaussian noise
    losses.py   VIME's reconstruction and mask-estimation losses
    schema.py   the features of a table: kinds, statistics, vocabularies
    masking.py  feature masks, VIME's corruption and its reconstruction loss
    downstream.py  linear probe and gradient-boosted trees on the embeddings and on the raw features
    domain.py   TabularDomain: its recipe, data and state, thin members over the modules above

Feature tokens (`FeatureTokenizer`, shared with the rl domain's state vectors) live in domains/features.py,
the downstream probes (`downstream_scores`) in domains/probes.py."""
from ..features import FeatureTokenizer
from ..probes import downstream_scores
from .domain import TabularDomain
from .losses import feature_reconstruction_loss, mask_prediction_loss, masked_positions, vime_loss
from .table import Rows, encode, read_table
from .views import apply_views, draw_view, marginal_draws

__all__ = ["TabularDomain", "FeatureTokenizer", "downstream_scores", "Rows", "encode", "read_table",
           "feature_reconstruction_loss", "mask_prediction_loss", "masked_positions", "vime_loss",
           "apply_views", "draw_view", "marginal_draws"]
