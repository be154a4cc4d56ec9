"""Model.embed's throughput on a file of texts, one per line, in the JSON shape of
`likewise bench embed FILE` (same warm-up: the first 64 texts once), so the two can be set side
by side:

    python python/bench_embed.py FILE [LINES] [PRECISION]
"""

import json
import os
import sys
import time

import likewise


def main(path: str, lines: int = 0, precision: str = "f32") -> None:
    with open(path, encoding="utf-8", errors="replace") as f:
        texts = [line.rstrip("\n") for line in f]
    if lines:
        texts = texts[:lines]
    model = likewise.Model(precision=precision)
    model.embed(texts[:64])
    start = time.perf_counter()
    vectors = model.embed(texts)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "system": f"likewise Python module ({precision})",
        "threads": int(os.environ.get("RAYON_NUM_THREADS", os.cpu_count() or 1)),
        "texts": len(texts),
        "dim": int(vectors.shape[1]),
        "seconds": round(seconds, 3),
        "texts_per_s": round(len(texts) / seconds, 1),
    }))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0, sys.argv[3] if len(sys.argv) > 3 else "f32")
