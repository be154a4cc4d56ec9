"""likewise.spark on a real Spark (pyspark in local mode, `local[2]` with task retries), against
the `likewise` binary on the same articles.

The articles: the seed articles, and 300 more put together from their paragraphs and the prose
of the golden file (real text, each article a different mix, some long enough to need several
windows), so the suite needs nothing outside the repository.
"""

import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import likewise
from likewise import spark as lws

from test_likewise import MODEL, ROOT, RAFAH, cli, cosine, GOLDEN


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    # The Python workers run this interpreter (the one with likewise installed) and take the
    # model from where the tests put it.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["LIKEWISE_MODEL"] = str(MODEL)
    session = (
        SparkSession.builder.master("local[2,3]")  # two cores; a failed task is tried again (3 times in all)
        .appName("likewise-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "64")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _paragraphs():
    out = []
    for f in sorted((ROOT / "seeds").glob("*.txt")):
        out += [p.strip() for p in f.read_text().split("\n\n") if len(p.strip()) > 40]
    for line in GOLDEN.read_text().splitlines():
        g = json.loads(line)
        if not g["id"].startswith("edge#") and len(g["text"]) > 40:
            out.append(g["text"].strip())
    return out


def articles(n=300):
    """The seeds as they are, then `n` articles of 2–9 paragraphs chosen by a fixed hash."""
    rows = [{"id": f.name, "text": f.read_text()} for f in sorted((ROOT / "seeds").glob("*.txt"))]
    paras = _paragraphs()
    for i in range(n):
        h = hashlib.sha256(str(i).encode()).digest()
        count = 2 + h[0] % 8
        chosen = [paras[(h[1 + j] * 7 + i * 13 + j) % len(paras)] for j in range(count)]
        rows.append({"id": f"mix-{i:04}", "text": f"Report number {i}\n\n" + "\n\n".join(chosen)})
    return rows


def write_jsonl(path, rows):
    # The same serialisation as likewise.spark's, so content hashes agree too.
    path.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n" for r in rows))
    return path


def frame(spark, rows, partitions=4):
    return spark.createDataFrame([(r["id"], r["text"]) for r in rows], "id string, text string").repartition(partitions)


def vectors_by_key(store, level):
    ids, matrix = likewise.Store(store, model=MODEL).vectors(level)
    if level == "article":
        return {k: matrix[i] for i, k in enumerate(ids)}
    return {ids[i]: matrix[i] for i in range(len(ids))}


def segment_files(store):
    return sorted(p.name for p in Path(store).iterdir() if p.name.startswith("seg-"))


def assert_whole(store):
    """The store opens (every segment's checksums are checked on opening) and holds no file its
    manifest does not name: one `.lkw` per segment, no temp file."""
    info = likewise.Store(store, model=MODEL).info()
    on_disk = [p.name for p in Path(store).iterdir()]
    assert not [n for n in on_disk if n.endswith(".tmp")], on_disk
    assert len([n for n in on_disk if n.startswith("seg-") and n.endswith(".lkw")]) == info["segments"], (on_disk, info)


def test_spark_index_gives_the_articles_vectors_and_answers_of_likewise_index(spark, tmp_path):
    rows = articles()
    cli_store = tmp_path / "cli"
    cli(cli_store, "index", str(write_jsonl(tmp_path / "articles.jsonl", rows)))
    spark_store = tmp_path / "spark"
    result = lws.index(frame(spark, rows), str(spark_store))
    assert result["articles_new"] == len(rows) and result["articles_written"] == len(rows), result
    assert result["skipped"] == 0 and result["problems"] == [], result
    assert result["articles"] == len(rows)
    for level in ("article", "paragraph"):
        ours, theirs = vectors_by_key(spark_store, level), vectors_by_key(cli_store, level)
        assert ours.keys() == theirs.keys(), level
        worst = min(cosine(ours[k], theirs[k]) for k in ours)
        assert worst >= 0.99999, (level, worst)
    a, b = likewise.Store(spark_store, model=MODEL), likewise.Store(cli_store, model=MODEL)
    for level in ("article", "paragraph"):
        qa, qb = a.query(RAFAH, level=level, k=10), b.query(RAFAH, level=level, k=10)
        assert len(qa["hits"]) == len(qb["hits"]) == 10
        # Rank by rank the same scores. The mixed articles repeat seed paragraphs word for word, so
        # equal scores tie and their order follows the segments: compare the hits above the last
        # score as sets.
        assert max(abs(x["score"] - y["score"]) for x, y in zip(qa["hits"], qb["hits"])) < 1e-5
        last = qa["hits"][-1]["score"] + 1e-5
        above = lambda q: {(h["key"], h.get("paragraph")) for h in q["hits"] if h["score"] > last}  # noqa: E731
        assert above(qa) == above(qb)
    # Words too: the lexical indexes the tasks wrote answer as the one `likewise index` wrote,
    # scored with the store's statistics, not one partition's.
    for level in ("article", "paragraph"):
        for q in ("Shoukry", '"ground operation" Rafah', "Herzog hostages families"):
            la, lb = a.query(q, level=level, k=20, mode="lexical"), b.query(q, level=level, k=20, mode="lexical")
            assert la["hits"] and len(la["hits"]) == len(lb["hits"]), (level, q)
            assert max(abs(x["score"] - y["score"]) for x, y in zip(la["hits"], lb["hits"])) < 1e-4, (level, q)
    assert_whole(spark_store)


def test_a_task_that_fails_is_retried_and_every_article_is_stored_once(spark, tmp_path):
    rows = articles(200)
    store = tmp_path / "store"
    store.mkdir()
    # Debris of an earlier job that died: a segment no manifest names.
    (store / "seg-00000001-spark-dead-p00000-a0-b0000-0000.lkw").write_bytes(b"half a segment")
    marker = tmp_path / "failed-once"

    def fail_once(index, it):
        # Partition 1 fails the first time, after some of its rows went on (so its first batches
        # may already be written as segments), and succeeds when Spark runs it again.
        for n, row in enumerate(it):
            if index == 1 and n == 40 and not marker.exists():
                marker.write_text("x")
                raise RuntimeError("injected failure")
            yield row

    df = frame(spark, rows, 3)
    flaky = spark.createDataFrame(df.rdd.mapPartitionsWithIndex(fail_once), df.schema)
    result = lws.index(flaky, str(store))
    assert marker.exists(), "the injected failure did not happen"
    assert result["articles_written"] == len(rows) and result["articles"] == len(rows), result
    keys = list(vectors_by_key(store, "article"))
    assert sorted(keys) == sorted(r["id"] for r in rows) and len(keys) == len(set(keys))
    assert "seg-00000001-spark-dead-p00000-a0-b0000-0000.lkw" not in segment_files(store)
    assert_whole(store)


def test_a_second_run_embeds_only_new_and_changed_articles(spark, tmp_path):
    rows = articles(120)
    store = tmp_path / "store"
    first = lws.index(frame(spark, rows), str(store))
    assert first["articles_new"] == len(rows) and first["alerts"] == 0
    # The job's commit follows the news as every writer does: stories, and saved searches.
    likewise.Store(store, model=MODEL).add_alert("quill", "Quillmere", mode="lexical")
    changed = [dict(r, text=r["text"] + "\n\nA late paragraph was added to this report.") for r in rows[20:30]]
    new = [{"id": f"new-{i}", "text": f"A new report {i} from Quillmere\n\n" + rows[i]["text"]} for i in range(10)]
    second_rows = rows[:20] + changed + rows[30:] + new
    second = lws.index(frame(spark, second_rows), str(store))
    assert (second["articles_new"], second["articles_changed"], second["articles_unchanged"]) == (10, 10, len(rows) - 10), second
    assert second["articles_written"] == 20 and second["articles"] == len(rows) + 10
    assert second["generation"] > first["generation"]
    s = likewise.Store(store, model=MODEL)
    log = s.alert_log("quill")
    # Each new article alerts once, or is named as a copy of one that did (the duplicate tiers).
    alerted = [a["key"] for a in log] + [c for a in log for c in a.get("copies", [])]
    assert second["alerts"] == len(log) and sorted(alerted) == sorted(r["id"] for r in new), (second, log)
    stories = s.stories(min_size=1)
    assert sum(st["size"] for st in stories["stories"]) == len(rows) + 10, stories
    doc = s.article(changed[0]["id"])
    assert any("late paragraph" in p["text"] for p in doc["paragraphs"])
    # The changed article is stored once, with its new text.
    keys = list(vectors_by_key(store, "article"))
    assert len(keys) == len(set(keys)) == len(rows) + 10
    # Nothing changed: nothing embedded, nothing written.
    third = lws.index(frame(spark, second_rows), str(store))
    assert third["articles_written"] == 0 and third["articles_unchanged"] == len(second_rows), third


def test_bad_rows_are_counted_and_named_and_the_job_goes_on(spark, tmp_path):
    good = articles(30)
    bad = [("null-text", None), ("empty-text", "   \n  "), (None, "an article without an id"),
           ("mix-0001", "the same id again, other text"), ("mix-0002", "and again")]
    data = [(r["id"], r["text"]) for r in good] + bad
    df = spark.createDataFrame(data, "id string, text string").repartition(3)
    store = tmp_path / "store"
    result = lws.index(df, str(store))
    problems = "\n".join(result["problems"])
    assert "null-text" in problems and "empty-text" in problems and "the id is null" in problems, problems
    assert result["duplicate_ids"] == {"mix-0001": 2, "mix-0002": 2}, result
    assert result["skipped"] == 5, result
    assert result["articles"] == len(good), result
    # Integer ids are stored as their decimal strings, and said so.
    ints = spark.createDataFrame([(7, "Blinken met Netanyahu in Tel Aviv."), (8, "The truce was extended.")], "id long, text string")
    r2 = lws.index(ints, str(tmp_path / "ints"))
    assert r2["converted_id_count"] == 2 and sorted(r2["converted_ids"]) == ["7", "8"], r2
    assert sorted(vectors_by_key(tmp_path / "ints", "article")) == ["7", "8"]
    # Dates as Spark's date or timestamp columns are stored as their days.
    dated = spark.createDataFrame(
        [("d1", "Floods hit Valencia.", datetime.date(2024, 10, 30), datetime.datetime(2024, 10, 30, 23, 5)),
         ("d2", "Rescuers searched the towns.", None, datetime.datetime(2024, 11, 2, 8, 0))],
        "id string, text string, day date, at timestamp")
    for col, want in [("day", {"d1": "2024-10-30", "d2": None}), ("at", {"d1": "2024-10-30", "d2": "2024-11-02"})]:
        lws.index(dated, str(tmp_path / f"dated-{col}"), date_col=col)
        stored = likewise.Store(tmp_path / f"dated-{col}", model=MODEL).articles().set_index("key")["date"]
        assert {k: (None if pd.isna(v) else v) for k, v in stored.items()} == want, stored
        embedded = lws.embed(dated, date_col=col).toPandas().set_index("id")["date"]
        assert {k: (None if pd.isna(v) else v) for k, v in embedded.items()} == want, embedded
    with pytest.raises(TypeError, match="date column 'n' is int, not string, date or timestamp"):
        lws.index(spark.createDataFrame([("a", "t", 1)], "id string, text string, n int"), str(tmp_path / "never"), date_col="n")
    # A column of the wrong kind is refused before any work, naming it.
    with pytest.raises(TypeError, match="text column 'text' is int"):
        lws.index(spark.createDataFrame([("a", 1)], "id string, text int"), str(tmp_path / "never"))
    with pytest.raises(ValueError, match="'body' is not in the DataFrame"):
        lws.index(df, str(tmp_path / "never"), text_col="body")


def test_embedded_paragraphs_written_as_parquet_index_without_embedding(spark, tmp_path):
    rows = articles(40)
    vectors = lws.embed(frame(spark, rows, 2), level="paragraph")
    out = tmp_path / "vectors.parquet"
    vectors.write.parquet(str(out))
    spark_store = tmp_path / "from-spark"
    lws.index(frame(spark, rows), str(spark_store))
    parquet_store = tmp_path / "from-parquet"
    parts = sorted(str(p) for p in out.glob("part-*.parquet"))
    done = cli(parquet_store, "index", *parts)
    # Every vector came with the rows: nothing was embedded.
    assert re.search(r"chunks, 0 tokens\) embedded", done.stderr), done.stderr
    assert f"{len(rows)} new" in done.stderr, done.stderr
    for level in ("article", "paragraph"):
        a, b = vectors_by_key(spark_store, level), vectors_by_key(parquet_store, level)
        assert a.keys() == b.keys()
        assert min(cosine(a[k], b[k]) for k in a) >= 0.99999
    # Article vectors said to be made another way, or not said at all, are made again from the
    # text (with a notice), the paragraph vectors kept: a store never mixes two kinds.
    import pandas as pd
    table = pd.concat(pd.read_parquet(p) for p in parts)
    assert set(table["article_vectors"]) == {"whole-text-and-lede"}
    # Each row names its article's headline, so a store made from the file keeps it.
    assert table.groupby("id")["title"].first()["mix-0012"] == "Report number 12"
    for name, frame_out in [("other", table.assign(article_vectors="paragraphs-and-lead")),
                            ("unsaid", table.drop(columns=["article_vectors"]))]:
        path = tmp_path / f"{name}.parquet"
        frame_out.to_parquet(path)
        redone = cli(tmp_path / f"store-{name}", "index", str(path))
        assert "are made again from the text" in redone.stderr, redone.stderr
        assert not re.search(r"chunks, 0 tokens\) embedded", redone.stderr), redone.stderr
        assert "inputs were skipped" not in redone.stderr, redone.stderr
        a, b = vectors_by_key(spark_store, "article"), vectors_by_key(tmp_path / f"store-{name}", "article")
        assert min(cosine(a[k], b[k]) for k in a) >= 0.99999
        # The paragraph vectors are the file's, bit for bit.
        _, given = likewise.Store(parquet_store, model=MODEL).vectors("paragraph")
        _, kept = likewise.Store(tmp_path / f"store-{name}", model=MODEL).vectors("paragraph")
        assert np.array_equal(given, kept)
    art = lws.embed(frame(spark, rows[:5], 1)).toPandas()
    assert list(art.columns) == ["id", "title", "date", "source", "url", "text", "vector", "model", "precision",
                                 "article_vectors", "problem"]
    assert art["problem"].isna().all() and len(art) == 5
    bad = lws.embed(spark.createDataFrame([("x", None), ("y", "Blinken met Netanyahu.")], "id string, text string")).toPandas()
    assert bad.set_index("id").loc["x", "problem"].startswith("article `x`: the text is null")
    assert bad.set_index("id")["problem"].isna()["y"]


def test_similar_pairs_finds_the_pairs_of_an_exact_pass_with_the_tiers_of_likewise_dupes(spark, tmp_path):
    rows = articles(80)
    copies = []
    for i in range(0, 40, 4):
        src = rows[5 + i]
        copies.append({"id": f"copy-{i}", "text": src["text"]})                             # exact
        body = src["text"].split("\n\n")
        copies.append({"id": f"edit-{i}", "text": "\n\n".join(["A new headline here"] + body[1:] + ["Reporting by the desk."])})
    rows = rows + copies
    vectors = lws.embed(frame(spark, rows, 3)).cache()
    found = {(r.id_a, r.id_b): (r.score, r.tier) for r in lws.similar_pairs(vectors, threshold=0.9).collect()}
    local = vectors.select("id", "vector").toPandas()
    ids = list(local["id"])
    m = np.array(local["vector"].tolist(), dtype=np.float32)
    sims = m @ m.T
    exact = {tuple(sorted((ids[i], ids[j]))) for i in range(len(ids)) for j in range(i + 1, len(ids)) if sims[i, j] >= 0.9}
    assert len(exact) >= 20, len(exact)
    recall = len(exact & set(found)) / len(exact)
    assert recall >= 0.99, (recall, sorted(exact - set(found))[:5])
    assert all(s >= 0.9 - 1e-6 for s, _ in found.values())
    # The tiers are those of `likewise dupes` on a store of the same articles.
    store = tmp_path / "store"
    cli(store, "index", str(write_jsonl(tmp_path / "a.jsonl", rows)))
    dupes = json.loads(cli(store, "dupes", "--level", "article", "--format", "json").stdout)["pairs"]
    theirs = {tuple(sorted((p["a"]["key"], p["b"]["key"]))): p["tier"] for p in dupes if p["score"] >= 0.9}
    ours = {k: t for k, (_, t) in found.items() if t is not None}
    assert ours == theirs, (set(ours.items()) ^ set(theirs.items()))
    assert "exact" in ours.values() and "near-copy" in ours.values()
    with pytest.raises(ValueError, match="bits must be"):
        lws.similar_pairs(vectors, bits=99)


def test_workers_that_cannot_import_likewise_get_a_clear_error(tmp_path):
    """A cluster whose executors run a Python without likewise: the job is refused before it
    starts, naming the workers' Python and how to fix it, not with a bare ModuleNotFoundError
    in a Java stack trace. Its own Spark application (the workers' Python is fixed when Spark
    starts), with a virtual environment that has only the standard library."""
    import subprocess
    import sys

    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    job = tmp_path / "job.py"
    job.write_text(
        "import sys\n"
        "from pyspark.sql import SparkSession\n"
        "import likewise\n"
        "from likewise import spark as lws\n"
        "spark = (SparkSession.builder.master('local[1]').config('spark.pyspark.python', sys.argv[1])\n"
        "         .config('spark.ui.enabled', 'false').config('spark.driver.bindAddress', '127.0.0.1')\n"
        "         .config('spark.driver.host', '127.0.0.1').getOrCreate())\n"
        "df = spark.createDataFrame([('a', 'Blinken spoke about Rafah.')], 'id string, text string')\n"
        "try:\n"
        "    lws.embed(df)\n"
        "except likewise.LikewiseError as error:\n"
        "    print('REFUSED:', error)\n"
        "    sys.exit(0)\n"
        "print('NOT REFUSED')\n"
        "sys.exit(1)\n"
    )
    # The workers' Python, by both of Spark's ways of naming it (the `spark` fixture set
    # PYSPARK_PYTHON to this interpreter, which has likewise, for the other tests).
    env = dict(os.environ, PYSPARK_PYTHON=str(bare / "bin" / "python"))
    out = subprocess.run(
        [sys.executable, str(job), str(bare / "bin" / "python")],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    message = out.stdout
    assert "cannot import likewise" in message or "could not run the check" in message, message
    assert "PYSPARK_PYTHON" in message and "docs/spark.md" in message, message
