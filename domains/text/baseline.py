"""The bag-of-words baseline next to an encoder: the engine's kNN on TF-IDF features of the same texts."""
import torch

from multissl.monitor import knn_predict


def tfidf_knn(train_texts: list[str], train_y: list[int], test_texts: list[str], test_y: list[int], k: int = 20,
              temperature: float = 0.07) -> float:
    """Held-out accuracy of the weighted kNN (multissl.monitor) on L2-normalized TF-IDF vectors of character 2-4-grams
    inside words (sublinear counts; they read every script, spaces or not), fit on the training texts; unlabelled
    samples (-1) are left out."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    tr = [i for i, y in enumerate(train_y) if y >= 0]
    te = [i for i, y in enumerate(test_y) if y >= 0]
    if not tr or not te:
        return float("nan")
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
    a = vec.fit_transform([train_texts[i] for i in tr])  # [n F] sparse, rows unit length
    b = vec.transform([test_texts[i] for i in te])
    ya, yb = torch.tensor([train_y[i] for i in tr]), torch.tensor([test_y[i] for i in te])
    n_cls, correct = int(max(ya.max(), yb.max())) + 1, 0
    for i in range(0, b.shape[0], 512):
        sim = torch.from_numpy((b[i:i + 512] @ a.T).toarray()).float()  # [q n] cosine
        correct += (knn_predict(sim, ya, n_cls, k, temperature) == yb[i:i + 512]).sum().item()
    return correct / len(te)
