"""likewise on Apache Spark: embedding, indexing and duplicate search over DataFrames.

    from likewise import spark as lws
    vectors = lws.embed(df, text_col="text", id_col="id", level="paragraph")  # a DataFrame
    result = lws.index(df, "/shared/archive.store")   # one store, one atomic commit
    pairs = lws.similar_pairs(vectors, threshold=0.9)  # a DataFrame of (id_a, id_b, score)

It runs the engine of the `likewise` command inside Spark's Python workers (`mapInArrow`): each
worker loads the model once and keeps it for every task it runs, cuts articles into paragraphs
and windows exactly as `likewise index` does, and writes the store's own segment files.

Indexing: the driver takes the store's writer lock, every task writes its segment files into the
store's folder (which every executor must see: local disk in local mode, a shared file system
on a cluster), and when all tasks have succeeded the driver commits one manifest naming them,
atomically. A failed or retried task leaves files no manifest names; the commit removes them.
Unchanged articles (same id, same content) are not embedded again.

Bad rows never stop a job and are never dropped silently: a null id, a null or empty text, an
id that is neither a string nor an integer, a repeated id — each is counted and named in the
result (`index`) or on its row's `problem` column (`embed`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from typing import Any, Dict, Iterator, List, Optional

from . import _likewise
from . import Model, Store

__all__ = ["embed", "index", "similar_pairs"]

# Models loaded in this Python process, by (model, precision): a Spark worker process runs many
# tasks, and loading MiniLM costs about a second.
_MODELS: Dict[tuple, Any] = {}

# Names of bad rows kept in a result (their count is always exact).
MAX_NAMED = 1000
# Columns `index` adds to the rows: the stored key and content hash of each row's id.
STORED_KEY = "__likewise_stored_key"
STORED_HASH = "__likewise_stored_hash"


# The probe that asks Spark's Python workers whether they can import likewise. It is compiled
# here in a namespace of its own, so cloudpickle ships it by value: a function of this module
# would be shipped by reference, and a worker without likewise would fail to unpickle it with a
# bare ModuleNotFoundError deep in a Java stack trace, which is what this check is for.
_PROBE_SOURCE = """
def probe(_partition):
    import socket, sys
    try:
        import likewise._likewise  # the compiled engine, not only the Python package
        yield (True, socket.gethostname(), sys.executable, sys.version.split()[0], "")
    except Exception as error:
        yield (False, socket.gethostname(), sys.executable, sys.version.split()[0], repr(error))
"""
# Spark applications whose workers were checked (a check costs one small job).
_WORKERS_CHECKED: set = set()


def _check_workers(spark_context) -> None:
    """Raises `LikewiseError` naming the workers' Python when Spark's workers cannot import
    likewise, before any job runs (once per Spark application)."""
    app = spark_context.applicationId
    if app in _WORKERS_CHECKED:
        return
    namespace: Dict[str, Any] = {"__name__": "likewise_worker_probe"}
    exec(compile(_PROBE_SOURCE, "<likewise worker probe>", "exec"), namespace)
    slots = max(1, int(spark_context.defaultParallelism))
    advice = ("Install the likewise module into the Python every executor runs (the same wheel as the "
              "driver's: pip install it there, or ship a packed virtual environment with spark.archives), "
              "and point PYSPARK_PYTHON or spark.pyspark.python at that Python; see docs/spark.md")
    try:
        answers = spark_context.parallelize(range(slots), slots).mapPartitions(namespace["probe"]).collect()
    except Exception as error:  # the workers' Python did not even start (a wrong path, no pyspark…)
        text = str(error)
        found = re.search(r"(\w*(Error|Exception): [^\n]*)", text.split("Traceback", 1)[-1])
        reason = found.group(1) if found else text[:300]
        raise _likewise.LikewiseError(
            f"Spark's Python workers could not run the check that they can import likewise ({reason}). {advice}"
        ) from None
    failing = [a for a in answers if not a[0]]
    if failing:
        _, host, python, version, error = failing[0]
        chosen = spark_context.getConf().get("spark.pyspark.python") or os.environ.get("PYSPARK_PYTHON")
        configured = f", chosen as {chosen}" if chosen else ""
        raise _likewise.LikewiseError(
            f"Spark's Python workers cannot import likewise ({len(failing)} of {len(answers)} tasks; "
            f"on {host}, Python {version} at {python}{configured}: {error}). {advice}"
        )
    _WORKERS_CHECKED.add(app)


def _model(name: Optional[str], precision: str) -> Model:
    key = (name, precision)
    if key not in _MODELS:
        _MODELS[key] = Model(name, precision=precision)
    return _MODELS[key]


def _check_columns(df, names: Dict[str, Optional[str]]) -> None:
    from pyspark.sql.types import StringType, IntegralType

    fields = {f.name: f.dataType for f in df.schema.fields}
    for role, col in names.items():
        if col is None:
            continue
        if col not in fields:
            raise ValueError(f"{role} column {col!r} is not in the DataFrame (its columns: {', '.join(fields)})")
        kind = fields[col]
        if role == "id":
            if not isinstance(kind, (StringType, IntegralType)):
                raise TypeError(f"id column {col!r} is {kind.simpleString()}: ids must be strings (or integers)")
        elif role == "date" and kind.typeName() in _DATE_TYPES:
            continue
        elif not isinstance(kind, StringType):
            wanted = "string, date or timestamp" if role == "date" else "string"
            raise TypeError(f"{role} column {col!r} is {kind.simpleString()}, not {wanted}")


# Spark's own date kinds, taken as the day they fall on.
_DATE_TYPES = ("date", "timestamp", "timestamp_ntz")


def _dates_as_text(df, cols: Dict[str, Optional[str]]):
    """`df` with a date or timestamp date column as ISO days (yyyy-MM-dd), as the store keeps
    dates; a string column is left to the engine, which reads the usual spellings."""
    from pyspark.sql import functions as F

    col = cols.get("date")
    if col is None or df.schema[col].dataType.typeName() not in _DATE_TYPES:
        return df
    return df.withColumn(col, F.date_format(F.col(col), "yyyy-MM-dd"))


def _rows_to_lines(batch, cols: Dict[str, Optional[str]], where: str):
    """JSON lines of the index's fields for the rows of an Arrow batch, and the rows that cannot
    be one (named by id or position). Returns (lines, ids of the lines, problems, converted)."""
    data = {role: batch.column(col).to_pylist() if col else None for role, col in cols.items()}
    lines, ids, problems, converted = [], [], [], []
    for i in range(batch.num_rows):
        rid = data["id"][i]
        if rid is None:
            problems.append((None, f"{where} row {i}: the id is null; skipped"))
            continue
        if isinstance(rid, bool) or not isinstance(rid, (str, int)):
            problems.append((None, f"{where} row {i}: the id {rid!r} is {type(rid).__name__}, not a string; skipped"))
            continue
        if isinstance(rid, int):
            converted.append(rid)
            rid = str(rid)
        if rid.strip() == "":
            problems.append((rid, f"{where} row {i}: the id is empty; skipped"))
            continue
        text = data["text"][i]
        if text is None:
            problems.append((rid, f"article `{rid}`: the text is null; skipped"))
            continue
        rec = {"id": rid, "text": text}
        for role in ("title", "date", "source", "url"):
            if data.get(role) is not None and data[role][i] is not None:
                rec[role] = data[role][i]
        lines.append(json.dumps(rec, ensure_ascii=False))
        ids.append(rid)
    return lines, ids, problems, converted


def _line_problems(skipped: List[str], origin: str, ids: List[str]) -> List[tuple]:
    """The engine's warnings about lines (`origin:N: reason`) as (id, message) pairs."""
    out = []
    prefix = origin + ":"
    for w in skipped:
        rid = None
        if w.startswith(prefix):
            number, _, reason = w[len(prefix):].partition(": ")
            if number.isdigit() and 0 < int(number) <= len(ids):
                rid = ids[int(number) - 1]
                w = f"article `{rid}`: {reason}"
        out.append((rid, w))
    return out


def _columns(text_col, id_col, title_col, date_col, source_col, url_col):
    return {"id": id_col, "text": text_col, "title": title_col, "date": date_col, "source": source_col, "url": url_col}


def embed(
    df,
    text_col: str = "text",
    id_col: str = "id",
    level: str = "article",
    precision: str = "f32",
    model: Optional[str] = None,
    threads: Optional[int] = None,
    title_col: Optional[str] = None,
    date_col: Optional[str] = None,
    source_col: Optional[str] = None,
    url_col: Optional[str] = None,
):
    """The vectors of `df`'s articles as a DataFrame, computed where the rows are.

    `level="article"`: one row per article — `id`, `title`, `date`, `source`, `url`, `text` (its
    paragraphs as stored, blank lines between), `vector` (array<float>).
    `level="paragraph"`: one row per paragraph window, cut exactly as `likewise index` cuts them —
    `id`, `title`, `date`, `source`, `url`, `paragraph`, `window`, `text`, `vector`, and the
    article's `article_vector`.
    Both carry `model` (the model's identity, JSON), `precision` and `article_vectors` (how the
    article vectors were made), so the DataFrame written as Parquet is read back by `likewise index
    part-*.parquet` without embedding anything (article vectors made another way are made again). A row that
    cannot be embedded comes out once with a null vector and the reason in `problem` (null on
    every good row). `threads` bounds the cores each task uses (default: all of the worker's).
    """
    if level not in ("article", "paragraph"):
        raise ValueError(f"level must be 'article' or 'paragraph', not {level!r}")
    _model_check = Model(model, precision=precision)  # fails here, on the driver, for a bad model or precision
    identity = json.dumps(_model_check.identity, sort_keys=True)
    cols = _columns(text_col, id_col, title_col, date_col, source_col, url_col)
    _check_columns(df, cols)
    _check_workers(df.sparkSession.sparkContext)
    df = _dates_as_text(df, cols)
    vec = "array<float>"
    if level == "article":
        schema = (f"id string, title string, date string, source string, url string, text string, vector {vec}, "
                  "model string, precision string, "
                  "article_vectors string, problem string")
    else:
        schema = (f"id string, title string, date string, source string, url string, paragraph int, window int, "
                  f"text string, vector {vec}, article_vector {vec}, "
                  "model string, precision string, article_vectors string, problem string")
    selected = df.select(*[c for c in cols.values() if c is not None])

    def run(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        ctx = TaskContext.get()
        where = f"partition {ctx.partitionId() if ctx else 0}"
        m = _model(model, precision)
        for batch in batches:
            lines, ids, problems, _ = _rows_to_lines(batch, cols, where)
            origin = where
            doc, chunk_vectors, article_vectors = (
                m._native.embed_json_lines("\n".join(lines) + "\n", origin, threads) if lines
                else ('{"articles": [], "chunks": [], "skipped": []}', None, None))
            doc = json.loads(doc)
            problems += _line_problems(doc["skipped"], origin, ids)
            arts = doc["articles"]
            rows: Dict[str, list] = {name: [] for name in schema_names}
            if level == "article":
                paragraphs: List[List[str]] = [[] for _ in arts]
                last = [None] * len(arts)
                for chunk in doc["chunks"]:
                    a = chunk["article"]
                    if last[a] == chunk["paragraph"]:
                        paragraphs[a][-1] += " " + chunk["text"]
                    else:
                        paragraphs[a].append(chunk["text"])
                    last[a] = chunk["paragraph"]
                for a, art in enumerate(arts):
                    rows["id"].append(art["key"])
                    rows["title"].append(art["title"])
                    for field in ("date", "source", "url"):
                        rows[field].append(art.get("meta", {}).get(field))
                    rows["text"].append("\n\n".join(paragraphs[a]))
                    rows["vector"].append(article_vectors[a])
                    rows["problem"].append(None)
            else:
                for c, chunk in enumerate(doc["chunks"]):
                    art = arts[chunk["article"]]
                    rows["id"].append(art["key"])
                    rows["title"].append(art["title"])
                    for field in ("date", "source", "url"):
                        rows[field].append(art.get("meta", {}).get(field))
                    rows["paragraph"].append(chunk["paragraph"])
                    rows["window"].append(chunk["window"])
                    rows["text"].append(chunk["text"])
                    rows["vector"].append(chunk_vectors[c])
                    rows["article_vector"].append(article_vectors[chunk["article"]])
                    rows["problem"].append(None)
            for rid, message in problems:
                for name in schema_names:
                    rows[name].append(None)
                rows["id"][-1] = rid
                rows["problem"][-1] = message
            n = len(rows["id"])
            rows["model"] = [identity] * n
            rows["precision"] = [m.precision] * n
            rows["article_vectors"] = [doc.get("article_vectors")] * n
            arrays = []
            for name in schema_names:
                if name in ("vector", "article_vector"):
                    arrays.append(pa.array([None if v is None else v.tolist() for v in rows[name]], type=pa.list_(pa.float32())))
                elif name in ("paragraph", "window"):
                    arrays.append(pa.array(rows[name], type=pa.int32()))
                else:
                    arrays.append(pa.array(rows[name], type=pa.string()))
            yield pa.RecordBatch.from_arrays(arrays, names=schema_names)

    schema_names = [part.split()[0] for part in schema.split(", ")]
    return selected.mapInArrow(run, schema)


def index(
    df,
    store_path: str,
    text_col: str = "text",
    id_col: str = "id",
    model: Optional[str] = None,
    precision: Optional[str] = None,
    threads: Optional[int] = None,
    title_col: Optional[str] = None,
    date_col: Optional[str] = None,
    source_col: Optional[str] = None,
    url_col: Optional[str] = None,
    articles_per_segment: int = 10000,
    partitions: Optional[int] = None,
) -> dict:
    """Indexes `df`'s articles into the store at `store_path` (made when missing) as one commit.

    Each task embeds its rows' new and changed articles (an id already stored with the same
    content is skipped) and writes them as segment files; the driver then commits them all in one
    new generation, replacing the stored copies of changed articles. Returns what happened:
    `generation`, `articles_new`, `articles_changed`, `articles_unchanged`, `articles_written`,
    `paragraphs_embedded`, `tokens_embedded`, `skipped` (count) with `problems` (each naming its
    row or id), `duplicate_ids` (id → rows; one row of each is indexed), `converted_ids` (integer
    ids stored as their decimal strings), the store's `articles` and `paragraphs` after it, and
    `alerts`: the alerts the saved searches recorded for the new articles (the driver places
    them in stories and matches them after the commit, as every writer does).
    """
    from pyspark.sql import functions as F

    if not isinstance(store_path, (str, os.PathLike)):
        raise TypeError(f"store_path must be a str or a path, not {type(store_path).__name__}")
    store_path = os.path.abspath(os.fspath(store_path))
    cols = _columns(text_col, id_col, title_col, date_col, source_col, url_col)
    _check_columns(df, cols)
    _check_workers(df.sparkSession.sparkContext)
    df = _dates_as_text(df, cols)
    if not isinstance(articles_per_segment, int) or articles_per_segment < 1:
        raise ValueError("articles_per_segment must be a positive int")
    if partitions is not None and (isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1):
        raise ValueError("partitions must be a positive int")

    driver_store = Store(store_path, model=model, precision=precision)
    job = driver_store._native.begin_job()
    try:
        # The store's content hashes travel with the rows (a join on the id), not to every task:
        # at 10M articles they are ~1 GB, which each task would otherwise receive and parse.
        start_json = job.start_json(False)
        start = json.loads(start_json)
        stored_keys, stored_hashes = job.known()
        precision_used = start["precision"]
        # Repeated ids: counted and named here; one row of each goes on.
        sc = df.sparkSession.sparkContext
        counted = df.where(F.col(id_col).isNotNull()).groupBy(id_col).count().where(F.col("count") > 1)
        duplicates = {str(r[0]): int(r[1]) for r in counted.limit(MAX_NAMED).collect()}
        duplicate_count = counted.count() if len(duplicates) >= MAX_NAMED else len(duplicates)
        extra_rows = counted.agg(F.sum(F.col("count") - 1)).collect()[0][0] or 0
        with_ids = df.where(F.col(id_col).isNotNull()).dropDuplicates([id_col])
        null_ids = df.where(F.col(id_col).isNull())
        # The de-duplication's shuffle leaves few partitions (adaptive execution merges small
        # ones: a few thousand articles fit one); spread the rows over as many tasks as the input
        # had, or as asked, so every core embeds. Four tasks per core: the last task, running
        # alone at the end, is then a small share of the job.
        parts_wanted = partitions if partitions is not None else max(df.rdd.getNumPartitions(), 4 * sc.defaultParallelism)
        rows = with_ids.unionByName(null_ids).select(*[c for c in cols.values() if c is not None])
        if stored_keys:
            import pyarrow as pa

            stored = df.sparkSession.createDataFrame(pa.table({
                STORED_KEY: pa.array(stored_keys, type=pa.string()),
                STORED_HASH: pa.array(stored_hashes, type=pa.string())}))
            del stored_keys, stored_hashes
            rows = (rows.join(stored, F.col(id_col).cast("string") == F.col(STORED_KEY), "left")
                    .drop(STORED_KEY))
        else:
            rows = rows.withColumn(STORED_HASH, F.lit(None).cast("string"))
        rows = rows.repartition(parts_wanted)

        start_b = sc.broadcast(start_json)
        token = secrets.token_hex(4)
        generation = start["generation"]

        def run(batches):
            import pyarrow as pa
            from pyspark import TaskContext

            ctx = TaskContext.get()
            part = ctx.partitionId() if ctx else 0
            attempt = ctx.attemptNumber() if ctx else 0
            where = f"partition {part}"
            m = _model(model, precision_used)
            store = _likewise.StoreEngine(store_path, m._native, None, None)
            base = json.loads(start_b.value)
            for b, batch in enumerate(batches):
                lines, ids, problems, converted = _rows_to_lines(batch, cols, where)
                origin = f"{where} batch {b}"
                if lines:
                    # The stored hashes of this batch's ids: an article stored with the same
                    # content is skipped.
                    raw_ids = batch.column(cols["id"]).to_pylist()
                    known = {str(r): h for r, h in zip(raw_ids, batch.column(STORED_HASH).to_pylist())
                             if h is not None and r is not None}
                    part_start = json.dumps(dict(base, known=known))
                    stem = f"seg-{generation:08}-spark-{token}-p{part:05}-a{attempt}-b{b:04}"
                    written = json.loads(store.write_part_json(
                        part_start, stem, origin, "\n".join(lines) + "\n", threads, articles_per_segment))
                    problems += _line_problems(written["skipped"], origin, ids)
                else:
                    written = None
                report = {"written": written, "problems": [p[1] for p in problems],
                          "converted": [str(c) for c in converted[:MAX_NAMED]], "converted_count": len(converted)}
                yield pa.RecordBatch.from_arrays([pa.array([json.dumps(report)], type=pa.string())], names=["report"])

        reports = [json.loads(r.report) for r in rows.mapInArrow(run, "report string").collect()]
        parts = [r["written"] for r in reports if r["written"] is not None]
        committed = json.loads(job.commit_json(json.dumps(parts)))
    except BaseException:
        job.close()
        raise
    problems = [p for r in reports for p in r["problems"]]
    if committed.get("follow_warning"):
        problems.insert(0, f"store {store_path}: {committed['follow_warning']}")
    # Every row not indexed says so ("…; skipped"); other notes (a paragraph cut short) do not.
    skipped = sum(1 for p in problems if p.endswith("skipped")) + int(extra_rows)
    converted = [c for r in reports for c in r["converted"]]
    total = lambda key: sum(p[key] for p in parts)  # noqa: E731
    for rid, n in list(duplicates.items())[:MAX_NAMED]:
        problems.append(f"article `{rid}`: the id is on {n} rows; one is indexed, {n - 1} skipped")
    return {
        "store": store_path,
        "generation": committed["generation"],
        "articles_new": total("articles_new"),
        "articles_changed": total("articles_changed"),
        "articles_unchanged": total("articles_unchanged"),
        "articles_written": committed["articles_written"],
        "paragraphs_embedded": total("paragraphs_embedded"),
        "chunks_embedded": total("chunks_embedded"),
        "tokens_embedded": total("tokens_embedded"),
        "segments_written": committed["segments"],
        "skipped": skipped,
        "problems": problems[:MAX_NAMED],
        "duplicate_ids": duplicates,
        "duplicate_id_count": duplicate_count,
        "converted_ids": converted[:MAX_NAMED],
        "converted_id_count": sum(r["converted_count"] for r in reports),
        "articles": committed["articles"],
        "paragraphs": committed["paragraphs"],
        "alerts": committed["alerts"],
    }


def band_keys(vectors, bands: int, bits: int, seed: int):
    """The LSH keys of unit vectors: for each of `bands` bands, the signs of `bits` random
    projections (SimHash: two vectors at angle θ agree on each sign with probability 1 − θ/π)
    packed into one integer. Shape (rows, bands), int64; the same seed gives the same planes."""
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    planes = np.random.default_rng(seed).standard_normal((vectors.shape[1], bands * bits)).astype(np.float32)
    signs = (vectors @ planes) > 0
    weights = (1 << np.arange(bits, dtype=np.int64))
    return (signs.reshape(len(vectors), bands, bits) * weights).sum(axis=2)


def similar_pairs(
    vectors_df,
    threshold: float = 0.9,
    id_col: str = "id",
    vector_col: str = "vector",
    title_col: Optional[str] = "title",
    text_col: Optional[str] = "text",
    bands: int = 64,
    bits: int = 14,
    seed: int = 20240301,
):
    """Pairs of rows whose vectors have cosine ≥ `threshold`, without comparing all pairs: a
    similarity join. Candidates share one band of `bits` signs of random projections (banded
    LSH: a pair at cosine 0.9 shares at least one of 64 bands of 14 bits with probability
    0.9996), then each candidate's exact cosine decides. More bits make fewer candidates (less work)
    and need more bands for the same recall.

    `vectors_df` is what `embed(..., level="article")` returns (or any DataFrame with an id and
    an array<float> vector; rows whose vector is null — `embed`'s problem rows — take no part).
    Returns a DataFrame `id_a`, `id_b` (id_a < id_b), `score`, and, when titles and texts are
    there, `tier` (exact / near-copy / rewrite, judged as `likewise dupes` judges its pairs; null
    for a similar pair in no tier) and `overlap` (share of the shorter text's word 5-grams in the
    other).
    """
    import pyarrow as pa
    from pyspark.sql import functions as F

    if not (isinstance(threshold, (int, float)) and -1.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be a number from -1 to 1, not {threshold!r}")
    for name, v, hi in (("bands", bands, 4096), ("bits", bits, 62)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
            raise ValueError(f"{name} must be an int from 1 to {hi}, not {v!r}")
    fields = {f.name for f in vectors_df.schema.fields}
    for col in (id_col, vector_col):
        if col not in fields:
            raise ValueError(f"column {col!r} is not in the DataFrame (its columns: {', '.join(sorted(fields))})")
    _check_workers(vectors_df.sparkSession.sparkContext)
    with_text = title_col in fields and text_col in fields
    rows = vectors_df.where(F.col(vector_col).isNotNull() & F.col(id_col).isNotNull())
    keep = [F.col(id_col).cast("string").alias("id"), F.col(vector_col).alias("vector")]
    if with_text:
        keep += [F.col(title_col).alias("title"), F.col(text_col).alias("text")]
    rows = rows.select(*keep)

    def keys(batches):
        import numpy as np

        for batch in batches:
            if batch.num_rows == 0:
                continue
            vecs = np.array(batch.column("vector").to_pylist(), dtype=np.float32)
            k = band_keys(vecs, bands, bits, seed)
            ids = batch.column("id").to_pylist()
            yield pa.RecordBatch.from_arrays(
                [pa.array(np.repeat(ids, bands).tolist(), type=pa.string()),
                 pa.array(np.tile(np.arange(bands, dtype=np.int32), len(ids))),
                 pa.array(k.reshape(-1))],
                names=["id", "band", "bucket"])

    buckets = rows.select("id", "vector").mapInArrow(keys, "id string, band int, bucket long")
    a, b = buckets.alias("a"), buckets.alias("b")
    candidates = (a.join(b, (F.col("a.band") == F.col("b.band")) & (F.col("a.bucket") == F.col("b.bucket")))
                  .where(F.col("a.id") < F.col("b.id"))
                  .select(F.col("a.id").alias("id_a"), F.col("b.id").alias("id_b"))
                  .distinct())
    side = rows.select(*[F.col(c).alias(f"{c}_a") for c in rows.columns])
    other = rows.select(*[F.col(c).alias(f"{c}_b") for c in rows.columns])
    joined = candidates.join(side, "id_a").join(other, "id_b")
    out_schema = "id_a string, id_b string, score float" + (", tier string, overlap float" if with_text else "")

    def score(batches):
        import numpy as np

        for batch in batches:
            if batch.num_rows == 0:
                continue
            va = np.array(batch.column("vector_a").to_pylist(), dtype=np.float32)
            vb = np.array(batch.column("vector_b").to_pylist(), dtype=np.float32)
            norms = np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1)
            cos = np.einsum("ij,ij->i", va, vb) / np.where(norms > 0, norms, 1)
            keep = np.nonzero(cos >= threshold)[0]
            if len(keep) == 0:
                continue
            ida, idb = batch.column("id_a").to_pylist(), batch.column("id_b").to_pylist()
            arrays = [pa.array([ida[i] for i in keep], type=pa.string()),
                      pa.array([idb[i] for i in keep], type=pa.string()),
                      pa.array(cos[keep].astype(np.float32))]
            if with_text:
                ta, xa = batch.column("title_a").to_pylist(), batch.column("text_a").to_pylist()
                tb, xb = batch.column("title_b").to_pylist(), batch.column("text_b").to_pylist()
                split = lambda t: [p for p in (t or "").split("\n\n") if p]  # noqa: E731
                pairs = [{"a": [ta[i] or "", split(xa[i])], "b": [tb[i] or "", split(xb[i])], "score": float(cos[i])}
                         for i in keep]
                tiers = json.loads(_likewise.article_tiers_json(json.dumps(pairs)))
                arrays += [pa.array([t[0] for t in tiers], type=pa.string()),
                           pa.array([t[1] if t[0] else None for t in tiers], type=pa.float32())]
            yield pa.RecordBatch.from_arrays(arrays, names=[p.split()[0] for p in out_schema.split(", ")])

    return joined.mapInArrow(score, out_schema)
