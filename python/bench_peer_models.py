"""The peers of likewise's other models, timed as `likewise bench embed FILE` times itself (the
first 64 texts once as warm-up, then every text; tokens counted with the model's own truncation),
so each model's figure can be set beside its usual Python runtime in the same run:

    python python/bench_peer_models.py sentence-transformers MODEL_DIR FILE [THREADS]
    python python/bench_peer_models.py model2vec MODEL_DIR FILE

Run it with a Python that has sentence-transformers (PyTorch) or model2vec.
"""

import json
import sys
import time


def main(kind: str, model_dir: str, path: str, threads: int = 2) -> None:
    with open(path, encoding="utf-8", errors="replace") as f:
        texts = [line.rstrip("\n") for line in f]
    if kind == "sentence-transformers":
        import torch
        import sentence_transformers
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        model = SentenceTransformer(model_dir, device="cpu")
        encode = lambda t: model.encode(t, batch_size=32, normalize_embeddings=True)
        tokens = sum(len(ids) for ids in model.tokenizer(texts, truncation=True,
                                                         max_length=model.max_seq_length)["input_ids"])
        system = f"sentence-transformers {sentence_transformers.__version__} / torch {torch.__version__}"
    elif kind == "model2vec":
        import model2vec
        from model2vec import StaticModel

        model = StaticModel.from_pretrained(model_dir)
        encode = model.encode
        tokens = sum(len(ids) for ids in model.tokenize(texts))
        system = f"model2vec {model2vec.__version__}"
        threads = 1
    else:
        sys.exit(f"unknown peer {kind!r}: sentence-transformers or model2vec")
    encode(texts[:64])
    start = time.perf_counter()
    encode(texts)
    seconds = time.perf_counter() - start
    print(json.dumps({"system": system, "model": model_dir, "threads": threads, "texts": len(texts),
                      "tokens": tokens, "seconds": round(seconds, 3),
                      "tokens_per_s": round(tokens / seconds)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], *(int(a) for a in sys.argv[4:5]))
