"""Encoders that learn fast where the data is small: each domain's default transformer against its small encoder at
the same objective, steps and seed — text: `encoder=bag` (fastText's bag of hashed n-grams); images and clips:
`encoder=convnet` (a small conv net, (2+1)-D on clips) —

    python benchmarks/fast_encoders.py [--domains text,image,video] [--seeds 0] [--steps 300] [--jobs 2] \
        [--out runs/fast_encoders] [key=value ...]

Each run is paired with its own untrained encoder (the same seed's initial weights) and shown beside the raw input
(`raw/knn_acc`: TF-IDF of the tokens, raw pixels, the raw clip). The criteria, fixed before any run: the small
encoder (a) ends at least 0.05 kNN above its untrained encoder and (b) above the transformer trained the same way;
(c), reported: whether it beats the raw input.
"""

from paired import final, mean_sd, parser, run_domains, untrained, write_domains

SMALL = {"text": "bag", "image": "convnet", "video": "convnet"}
OBJECTIVE = "simclr"
NOTE = ("Each domain's default data, `objective=simclr` at its defaults, {steps} steps, seed(s) {seeds}, on 2 CPU "
        "cores: the default transformer and the domain's small encoder, each paired with its own untrained encoder "
        "(gain) and shown beside the raw input (`raw/knn_acc`). Criteria fixed before any run: the small encoder "
        "(a) +0.05 kNN over its untrained encoder, (b) above the transformer; (c) reported: above the raw input.")


def verdicts(results: dict, domain: str, seeds: list[int]) -> list[str]:
    small = SMALL[domain]
    knn = lambda a: [final(results[(domain, a, s)], "knn_acc") for s in seeds]  # noqa: E731
    gain = mean_sd([final(results[(domain, small, s)], "knn_acc") - untrained(results, domain, small, s, "knn_acc")
                    for s in seeds])[0]
    over = mean_sd([a - b for a, b in zip(knn(small), knn("transformer"))])[0]
    raw = mean_sd([a - final(results[(domain, small, s)], "raw/knn_acc") for a, s in zip(knn(small), seeds)])[0]
    return [f"(a) {small}: {gain:+.3f} kNN over its untrained encoder — {'holds' if gain >= 0.05 else 'does not hold'}",
            f"(b) {small} - transformer: {over:+.3f} kNN — {'holds' if over > 0 else 'does not hold'}",
            f"(c) {small} - raw input: {raw:+.3f} kNN — {'above' if raw > 0 else 'not above'} the raw input"]


def main(argv=None) -> dict:
    args = parser(__doc__, "text,image,video").parse_args(argv)
    results = run_domains(args, lambda d: {"transformer": (f"objective={OBJECTIVE}",),
                                           SMALL[d]: (f"objective={OBJECTIVE}", f"encoder={SMALL[d]}")},
                          "runs/fast_encoders")
    write_domains(results, args, argv, __file__, "fast-encoders", verdicts, NOTE)
    return results


if __name__ == "__main__":
    main()
