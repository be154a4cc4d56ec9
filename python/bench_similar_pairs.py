"""`likewise.spark.similar_pairs` on a whole corpus against an exact all-pairs pass and against
`likewise dupes`: recall of the pairs at cosine ≥ threshold, agreement of the tiers, candidates
compared, and seconds.

    python python/bench_similar_pairs.py CORPUS_FOLDER [THRESHOLD] [CORES]

CORPUS_FOLDER holds .txt articles (folders inside are searched); each becomes {id: its path
relative to the folder, text}. The article vectors come from `likewise.spark.embed` in Spark
local[CORES] (default 2); the exact pass multiplies all of them in NumPy; `likewise dupes` runs on
a store that `likewise index` makes of the same records. Prints one JSON document.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import BIN, cpu, use_installed_module

use_installed_module(__file__)


def main():
    import numpy as np

    folder = Path(sys.argv[1])
    threshold = float(sys.argv[2]) if len(sys.argv) > 2 else 0.9
    cores = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    files = sorted(folder.rglob("*.txt"))
    rows = [{"id": str(f.relative_to(folder)), "text": f.read_text(errors="replace")} for f in files]
    work = Path(tempfile.mkdtemp(prefix="likewise-bench-pairs-"))
    jsonl = work / "articles.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession
    from likewise import spark as lws

    session = (SparkSession.builder.master(f"local[{cores}]").appName("likewise-bench-pairs")
               .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    df = session.createDataFrame([(r["id"], r["text"]) for r in rows], "id string, text string").repartition(4 * cores)
    start = time.perf_counter()
    vectors = lws.embed(df, threads=1).cache()
    embedded = vectors.where(vectors.vector.isNotNull()).count()
    embed_s = time.perf_counter() - start

    start = time.perf_counter()
    found = {(r.id_a, r.id_b): (r.score, r.tier) for r in lws.similar_pairs(vectors, threshold=threshold).collect()}
    pairs_s = time.perf_counter() - start

    local = vectors.where(vectors.vector.isNotNull()).select("id", "vector").toPandas()
    ids = list(local["id"])
    m = np.array(local["vector"].tolist(), dtype=np.float32)
    start = time.perf_counter()
    sims = m @ m.T
    i, j = np.nonzero(np.triu(sims >= threshold, k=1))
    exact = {tuple(sorted((ids[a], ids[b]))) for a, b in zip(i, j)}
    exact_s = time.perf_counter() - start
    session.stop()

    # The tiers of `likewise dupes` on a store of the same records.
    store = work / "store"
    subprocess.run([str(BIN), "--index", str(store), "index", str(jsonl)], check=True, capture_output=True)
    dupes = json.loads(subprocess.run([str(BIN), "--index", str(store), "dupes", "--level", "article", "--format", "json"],
                                      check=True, capture_output=True, text=True).stdout)["pairs"]
    theirs = {tuple(sorted((p["a"]["key"], p["b"]["key"]))): p["tier"] for p in dupes if p["score"] >= threshold}
    ours = {k: t for k, (_, t) in found.items() if t is not None}
    tiers = {}
    for t in sorted(set(theirs.values()) | set(ours.values())):
        tiers[t] = {"likewise_dupes": sum(1 for v in theirs.values() if v == t),
                    "similar_pairs": sum(1 for v in ours.values() if v == t),
                    "both": sum(1 for k, v in ours.items() if v == t and theirs.get(k) == t)}
    print(json.dumps({
        "cpu": cpu(), "date": time.strftime("%Y-%m-%d"), "spark": f"local[{cores}]",
        "articles": len(rows), "embedded": embedded, "threshold": threshold,
        "exact_pairs": len(exact), "found_pairs": len(found),
        "recall": round(len(exact & set(found)) / max(len(exact), 1), 4),
        "false_pairs": len(set(found) - exact),
        "missed": sorted(exact - set(found))[:10],
        "tiers": tiers, "tiers_identical": ours == theirs,
        "seconds": {"embed": round(embed_s, 1), "similar_pairs": round(pairs_s, 1), "exact_all_pairs_numpy": round(exact_s, 2)},
    }, indent=1))


if __name__ == "__main__":
    main()
