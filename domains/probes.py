"""Downstream probes on frozen embeddings, shared by the domains that score their own held-out metrics:
tabular (linear probe vs. gradient-boosted trees) and rl (how much of the true state a linear map reads).
scikit-learn is imported inside the functions: it is slow to import, and only evaluation needs it."""
import numpy as np


def linear_probe(model, emb_tr: np.ndarray, y_tr: np.ndarray, emb_te: np.ndarray, one_scale: bool = False):
    """Predictions on emb_te [m d] of the sklearn linear `model` fit on (emb_tr [n d], y_tr), the embeddings
    standardized with training statistics: per dimension (StandardScaler), or with `one_scale` centred and
    divided by one number, their overall RMS around the mean. One scale keeps a unit that barely fires in
    training (a ReLU unit active on a handful of steps: a tiny std) from turning its test activations into
    outliers that wreck the fit."""
    if one_scale:
        mu = emb_tr.mean(0)
        scale = float(np.sqrt(((emb_tr - mu) ** 2).mean())) or 1.0
        x_tr, x_te = (emb_tr - mu) / scale, (emb_te - mu) / scale
    else:
        from sklearn.preprocessing import StandardScaler
        scaler = StandardScaler().fit(emb_tr)
        x_tr, x_te = scaler.transform(emb_tr), scaler.transform(emb_te)
    return model.fit(x_tr, y_tr).predict(x_te)


def downstream_scores(raw_tr, emb_tr, y_tr, raw_te, emb_te, y_te, categorical, classification: bool) -> dict:
    """Accuracy (classification) or RMSE (regression) on the test rows of: a linear model on the
    standardized embeddings, HistGradientBoosting on the raw encoded features (NaN native, `categorical`
    bool [F] columns as categories), and HistGradientBoosting on raw features + embeddings."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    def score(pred):
        return float((pred == y_te).mean()) if classification else float(np.sqrt(((pred - y_te) ** 2).mean()))

    def gbdt(cat, x_tr, x_te):
        cls = HistGradientBoostingClassifier if classification else HistGradientBoostingRegressor
        return cls(categorical_features=cat if cat.any() else None, random_state=0).fit(x_tr, y_tr).predict(x_te)

    linear = LogisticRegression(max_iter=1000) if classification else Ridge()
    both_cat = np.concatenate([categorical, np.zeros(emb_tr.shape[1], bool)])
    return {"probe_linear": score(linear_probe(linear, emb_tr, y_tr, emb_te)),
            "gbdt_raw": score(gbdt(categorical, raw_tr, raw_te)),
            "gbdt_raw_ssl": score(gbdt(both_cat, np.hstack([raw_tr, emb_tr]), np.hstack([raw_te, emb_te])))}


def state_r2(emb_tr: np.ndarray, s_tr: np.ndarray, emb_te: np.ndarray, s_te: np.ndarray, alpha: float) -> np.ndarray:
    """R^2 on held-out rows, per state variable [S], of a ridge regression (penalty `alpha`) of the state [n S]
    from embeddings [n d] on one scale (`linear_probe`). 1 = the state is linearly readable, 0 = no better than
    its mean."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    pred = linear_probe(Ridge(alpha=alpha), emb_tr, s_tr, emb_te, one_scale=True)
    return np.atleast_1d(r2_score(s_te, pred, multioutput="raw_values"))
