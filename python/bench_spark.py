"""Spark's overhead and scaling: a corpus through `likewise.spark.index` on local[1] and local[2]
against `likewise index` on the same articles, same machine, one after another.

    python python/bench_spark.py CORPUS_FOLDER [LIMIT]

CORPUS_FOLDER holds .txt articles (folders inside are searched); each becomes {id: its path
relative to the folder, text}. The same records go to the binary as JSON lines, so both parse,
cut and embed exactly the same texts. Prints one JSON line per run (seconds, articles/s, the
ratio to the binary) and the CPU.
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
    folder = Path(sys.argv[1])
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else None
    files = sorted(folder.rglob("*.txt"))[:limit]
    rows = [{"id": str(f.relative_to(folder)), "text": f.read_text(errors="replace")} for f in files]
    work = Path(tempfile.mkdtemp(prefix="likewise-bench-spark-"))
    jsonl = work / "articles.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(json.dumps({"cpu": cpu(), "articles": len(rows), "date": time.strftime("%Y-%m-%d")}), flush=True)

    times = {}
    for threads in (1, 2):
        start = time.perf_counter()
        subprocess.run([str(BIN), "--threads", str(threads), "index", str(jsonl), "--index", str(work / f"binary-{threads}")],
                       check=True, capture_output=True)
        times[threads] = time.perf_counter() - start
        print(json.dumps({"run": f"likewise --threads {threads} index", "seconds": round(times[threads], 1),
                          "articles_per_s": round(len(rows) / times[threads], 1)}), flush=True)

    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession
    from likewise import spark as lws

    for cores in (1, 2):
        session = (SparkSession.builder.master(f"local[{cores}]").appName("likewise-bench")
                   .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
                   .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
        session.sparkContext.setLogLevel("ERROR")
        df = session.createDataFrame([(r["id"], r["text"]) for r in rows], "id string, text string").cache()
        df.count()
        start = time.perf_counter()
        # One thread per task: Spark's cores are the parallelism (local[1]: one core in all).
        result = lws.index(df, str(work / f"spark-{cores}"), threads=1)
        seconds = time.perf_counter() - start
        print(json.dumps({"run": f"likewise.spark.index local[{cores}]", "seconds": round(seconds, 1),
                          "articles_per_s": round(len(rows) / seconds, 1), "binary_same_cores_over_spark": round(times[cores] / seconds, 3),
                          "written": result["articles_written"], "tokens_embedded": result["tokens_embedded"],
                          "segments": result["segments_written"]}), flush=True)
        session.stop()


if __name__ == "__main__":
    main()
