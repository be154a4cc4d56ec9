"""The Python module against the CLI, the golden vectors and Parquet readers.

Runs the real model (models/all-MiniLM-L6-v2, fetched by the Rust tests or by the first
`likewise` call) and the release binary `target/release/likewise` beside the module: the same
engine behind both, so documents must be equal, not merely close.
"""

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import duckdb
import pytest

import likewise

ROOT = Path(__file__).resolve().parents[2]
# Where `cargo test --release` (run first by tests/run) put the binary: CARGO_TARGET_DIR when set.
BIN = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "release" / "likewise"

def _model_dir() -> Path:
    """The default model's folder, wherever `likewise` finds (or fetches) it."""
    subprocess.run([str(BIN), "model", "fetch"], cwd=ROOT, check=True, capture_output=True)
    out = subprocess.run([str(BIN), "model", "check"], cwd=ROOT, check=True, capture_output=True, text=True)
    return Path(json.loads(out.stdout)["dir"]).resolve()


MODEL = _model_dir()
GOLDEN = ROOT / "tests" / "fixtures" / "golden-all-MiniLM-L6-v2.jsonl"
RAFAH = "Blinken said a major ground operation in Rafah would be a mistake"


def cli(store, *args, check=True):
    env = dict(os.environ, LIKEWISE_INDEX=str(store), LIKEWISE_MODEL=str(MODEL))
    env.pop("RAYON_NUM_THREADS", None)
    return subprocess.run([str(BIN), *args], cwd=ROOT, env=env, capture_output=True, text=True, check=check)


def cli_json(store, *args):
    return json.loads(cli(store, *args).stdout)


@pytest.fixture(scope="session", autouse=True)
def at_root():
    # Paths in documents are shown relative to the working folder: the same one as the CLI's.
    os.chdir(ROOT)


@pytest.fixture(scope="session")
def model():
    return likewise.Model(MODEL)


@pytest.fixture(scope="session")
def seeds_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("seeds") / "store"
    cli(store, "index", str(ROOT / "seeds"))
    return store


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_vectors_equal_the_golden_file_and_the_cli(model, tmp_path):
    golden = [json.loads(line) for line in GOLDEN.read_text().splitlines()]
    texts = [g["text"] for g in golden]
    vectors = model.embed(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (len(texts), 384)
    worst = min(cosine(v, g["embedding"]) for v, g in zip(vectors, golden))
    assert worst >= 0.99999, worst
    # Identical to `likewise embed`, bit for bit (the same engine); other batches pad texts
    # otherwise, which moves the last bits only.
    lines = [t.replace("\n", " ") for t in texts[:20]]
    (tmp_path / "texts.txt").write_text("\n".join(lines) + "\n")
    out = cli(tmp_path / "unused", "embed", str(tmp_path / "texts.txt")).stdout.splitlines()
    from_cli = np.array([json.loads(l)["embedding"] for l in out], dtype=np.float32)
    ours = model.embed(lines)
    assert np.array_equal(ours, from_cli)
    small = model.embed(lines, batch_size=3)
    assert min(cosine(a, b) for a, b in zip(small, ours)) > 0.99999
    assert model.embed([]).shape == (0, 384)


def test_embedding_releases_the_gil(model):
    texts = [RAFAH * 8] * 200
    ticks = 0
    done = threading.Event()

    def work():
        model.embed(texts)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    start = time.perf_counter()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    t.join()
    elapsed = time.perf_counter() - start
    # The main thread ran all along (about one tick per millisecond), not blocked behind the GIL.
    assert elapsed > 0.2 and ticks > elapsed * 1000 * 0.3, (ticks, elapsed)


def test_store_documents_equal_the_cli(seeds_store):
    s = likewise.Store(seeds_store, model=MODEL)
    assert s.query(RAFAH) == cli_json(seeds_store, "query", RAFAH, "--format", "json")
    assert s.query(RAFAH, level="paragraph", k=3, min_score=0.3, source="Reuters") == cli_json(
        seeds_store, "query", RAFAH, "--level", "paragraph", "-k", "3", "--min-score", "0.3", "--source", "Reuters", "--format", "json")
    assert s.query(like=["000", "003"]) == cli_json(seeds_store, "query", "--like", "000", "--like", "003", "--format", "json")
    assert s.query([RAFAH, "the truce was extended"]) == cli_json(
        seeds_store, "query", "--queries", str(write_lines([RAFAH, "the truce was extended"])), "--format", "json")
    assert s.compare("003", "004") == cli_json(seeds_store, "compare", "003", "004", "--format", "json")
    assert s.clusters(by="story") == cli_json(seeds_store, "cluster", "--by", "story", "--format", "json")
    assert s.clusters(k=2) == cli_json(seeds_store, "cluster", "--k", "2", "--format", "json")
    assert s.dupes() == cli_json(seeds_store, "dupes", "--format", "json")
    assert s.info() == json.loads(cli(seeds_store, "info", "--format", "json").stdout)
    hits = [h["key"] for h in s.query(RAFAH)["hits"]]
    assert sorted(k.split("/")[-1][:3] for k in hits[:3]) == ["002", "003", "004"]


def write_lines(lines):
    import tempfile
    f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    f.write("\n".join(lines) + "\n")
    f.close()
    return f.name


def test_dataframes_have_typed_columns(seeds_store):
    s = likewise.Store(seeds_store, model=MODEL)
    articles = s.articles()
    assert list(articles.columns) == ["key", "id", "path", "title", "date", "source", "url", "paragraphs"]
    assert len(articles) == 5
    assert str(articles["key"].dtype) == "string" and articles["paragraphs"].dtype == np.int64
    hits = s.query_df(RAFAH, k=5)
    assert list(hits.columns) == ["query", "rank", "score", "key", "id", "path", "title", "date", "source",
                                  "url", "paragraph", "window", "paragraph_score", "text", "semantic_score",
                                  "semantic_rank", "lexical_score", "lexical_rank"]
    assert hits["score"].dtype == np.float32 and hits["rank"].tolist() == [1, 2, 3, 4, 5]
    assert str(hits["paragraph"].dtype) == "Int64" and str(hits["paragraph_score"].dtype) == "Float32"
    assert hits["score"].is_monotonic_decreasing
    many = s.query_df(like=["000", "003"], k=2)
    assert many["query"].tolist() == [0, 0, 1, 1]


def test_query_modes_find_names_phrases_and_passages(seeds_store):
    s = likewise.Store(seeds_store, model=MODEL)
    first = lambda doc: Path(doc["hits"][0]["path"]).name[:3]  # noqa: E731
    assert first(s.query("Herzog")) == "000" and first(s.query("Shoukry")) == "003"
    for mode in ("hybrid", "semantic", "lexical"):
        doc = s.query('"hypocritical spectacle"', mode=mode)
        assert doc["mode"] == mode and [Path(h["path"]).name[:3] for h in doc["hits"]] == ["002"]
    hybrid = s.query_df("Herzog", k=3)
    assert hybrid["lexical_rank"].tolist()[0] == 1 and hybrid["semantic_score"].notna().all()
    assert str(hybrid["lexical_score"].dtype) == "Float32" and str(hybrid["semantic_rank"].dtype) == "Int64"
    lexical = s.query_df("Herzog", mode="lexical")
    assert lexical["semantic_score"].isna().all() and len(lexical) == 1
    with pytest.raises(likewise.InvalidRequestError, match="mode must be"):
        s.query("Herzog", mode="words")
    with pytest.raises(likewise.InvalidRequestError, match="no word to search for"):
        s.query("the of", mode="lexical")
    with pytest.raises(likewise.InvalidRequestError, match="not a day of the calendar"):
        s.query("Rafah", since="2024-02-30")


def test_vectors_are_read_only_views_of_the_store(seeds_store, model):
    s = likewise.Store(seeds_store, model=MODEL)
    ids, m = s.vectors("paragraph")
    assert m.shape == (58, 384) and m.dtype == np.float32 and len(ids) == 58
    assert not m.flags.writeable and not m.flags.owndata, "a view of the memory map, not a copy"
    with pytest.raises(ValueError):
        m[0, 0] = 1.0
    key, paragraph, window = ids[0]
    assert key.endswith("000_af634a2fc44c76fa.txt") and (paragraph, window) == (0, 0)
    art_ids, a = s.vectors("article")
    assert a.shape == (5, 384) and art_ids == s.articles()["key"].tolist()
    # The rows are the stored vectors: a paragraph's own text embeds to its row.
    first = s.article(key)["paragraphs"][0]["text"]
    assert cosine(model.embed([first])[0], m[0]) > 0.99999
    with pytest.raises(ValueError):
        s.vectors("word")


def test_parquet_round_trip(seeds_store, tmp_path):
    out = tmp_path / "paragraphs.parquet"
    cli(seeds_store, "export", str(out), "--level", "paragraph")
    table = pq.read_table(out)
    meta = table.schema.metadata
    identity = json.loads(meta[b"likewise.model"])
    assert identity["name"] == "sentence-transformers/all-MiniLM-L6-v2" and meta[b"likewise.precision"] == b"f32"
    assert meta[b"likewise.article_vectors"] == b"whole-text-and-lede"
    assert table.num_rows == 58
    assert {"id", "path", "title", "paragraph", "text", "vector", "article_vector"} <= set(table.column_names)
    assert str(table.schema.field("vector").type) == "fixed_size_list<item: float>[384]"
    df = table.to_pandas()
    assert df.groupby("id")["article_vector"].apply(lambda s: s.notna().sum()).eq(1).all()
    # DuckDB reads it as it is.
    con = duckdb.connect()
    n, dims = con.execute(f"select count(*), min(len(vector)) from read_parquet('{out}')").fetchone()
    assert (n, dims) == (58, 384)
    articles = tmp_path / "articles.parquet"
    cli(seeds_store, "export", str(articles), "--with-text")
    adf = pd.read_parquet(articles)
    assert len(adf) == 5 and adf["text"].str.len().min() > 100
    # Back into a new store: nothing embedded, the same answers.
    copy = likewise.Store(tmp_path / "copy", model=MODEL)
    r = copy.index([out])
    assert r["report"]["articles_new"] == 5 and r["report"]["tokens_embedded"] == 0, r
    original = likewise.Store(seeds_store, model=MODEL)
    # Its rows got their lexical entries too: words find the same hits with the same scores.
    for level in ("article", "paragraph"):
        for text, mode in ((RAFAH, "hybrid"), ("Shoukry", "lexical"), ('"hypocritical spectacle"', "lexical")):
            a, b = original.query(text, level=level, mode=mode), copy.query(text, level=level, mode=mode)
            strip = lambda d: [(h["key"], h["score"], h.get("paragraph"), h.get("text")) for h in d["hits"]]
            assert a["hits"] and strip(a) == strip(b), (level, mode)
    assert original.vectors("paragraph")[1].tobytes() == copy.vectors("paragraph")[1].tobytes()
    # Indexing it again changes nothing.
    assert copy.index([out])["report"]["articles_unchanged"] == 5
    # npy and jsonl.
    cli(seeds_store, "export", str(tmp_path / "v.npy"))
    v = np.load(tmp_path / "v.npy")
    ids = json.loads((tmp_path / "v.ids.json").read_text())
    assert v.shape == (5, 384) and len(ids["ids"]) == 5 and ids["level"] == "article"
    cli(seeds_store, "export", str(tmp_path / "p.jsonl"), "--level", "paragraph")
    rows = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 58 and len(rows[0]["vector"]) == 384


def test_parquet_of_another_model_is_refused_and_rows_without_vectors_are_embedded(seeds_store, tmp_path, model):
    out = tmp_path / "p.parquet"
    cli(seeds_store, "export", str(out), "--level", "paragraph")
    table = pq.read_table(out)
    meta = dict(table.schema.metadata)
    identity = json.loads(meta[b"likewise.model"])
    identity["name"] = "someone/other-model"
    identity["weights_sha256"] = "0" * 64
    meta[b"likewise.model"] = json.dumps(identity).encode()
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "other.parquet")
    with pytest.raises(likewise.LikewiseError) as e:
        likewise.Store(tmp_path / "s", model=MODEL).index([tmp_path / "other.parquet"])
    assert "someone/other-model" in str(e.value) and "all-MiniLM-L6-v2" in str(e.value)
    # Texts without vectors (as pandas would write them) are embedded.
    df = pd.DataFrame({"id": ["a1", "a2"], "title": ["Flood closes roads", "Markets rally"],
                       "text": ["Heavy rain flooded Valencia.", "Stocks rose after the bank held rates."]})
    df.to_parquet(tmp_path / "plain.parquet")
    s = likewise.Store(tmp_path / "plain", model=MODEL)
    r = s.index([tmp_path / "plain.parquet"])
    assert r["report"]["articles_new"] == 2 and r["report"]["tokens_embedded"] > 0
    assert s.query("flooding in Spain", k=1)["hits"][0]["key"] == "a1"


def test_records_are_indexed(tmp_path):
    s = likewise.Store(tmp_path / "rec", model=MODEL)
    r = s.index([{"id": "x1", "title": "Eclipse over Texas", "text": "Millions watched the total solar eclipse.", "date": "2024-04-08"},
                 {"id": "x2", "text": "Budget talks\n\nThe chancellor set out spending plans."},
                 {"id": "x3", "text": ""}])
    assert r["report"]["articles_new"] == 2 and len(r["skipped"]) == 1 and "empty" in r["skipped"][0]
    assert s.query("solar eclipse", k=1)["hits"][0]["key"] == "x1"
    assert s.query("solar eclipse", since="2024-04-01")["hits"][0]["date"] == "2024-04-08"


def test_a_dataframe_is_indexed_row_by_row_with_missing_fields_left_out(tmp_path):
    # What pandas gives for a CSV with gaps: NaN titles, NaT dates, integer ids.
    frame = pd.DataFrame({
        "id": [101, 102, 103],
        "title": [np.nan, "Floods in Valencia", None],
        "text": ["Storms flooded the coast of Valencia overnight, killing dozens.",
                 "Rescuers searched for the missing after the floods.\n\nThe regional government declared mourning.",
                 "The central bank raised its main interest rate by a quarter point."],
        "date": [pd.Timestamp("2024-10-30"), pd.NaT, pd.Timestamp("2024-11-07")],
    })
    s = likewise.Store(tmp_path / "frame", model=MODEL)
    r = s.index(frame)
    assert r["report"]["articles_new"] == 3 and r["skipped"] == [], r
    articles = s.articles().set_index("key")
    assert list(articles.index) == ["101", "102", "103"]
    assert articles.loc["102", "title"] == "Floods in Valencia"
    assert articles.loc["103", "date"] == "2024-11-07" and pd.isna(articles.loc["102", "date"])
    # A one-line text is its own headline and its one paragraph: found at paragraph level.
    hits = s.query("flooding on the Valencia coast", level="paragraph", k=1)["hits"]
    assert hits[0]["key"] == "101" and hits[0]["text"].startswith("Storms flooded"), hits
    with pytest.raises(ValueError, match="no text column: none named text, body"):
        s.index(frame[["id", "title"]])
    with pytest.raises(TypeError, match="record 1: `text` is missing"):
        s.index(pd.DataFrame({"text": ["fine", np.nan]}))
    with pytest.raises(ValueError, match="at most"):
        s.query("floods", k=2**64)
    # A k past the store's size is every hit, not an allocation of k.
    assert len(s.query("floods", k=2**62)["hits"]) == 3
    # An id column with a gap is floats in pandas (7.0, NaN): the id is still 7; the row
    # without one is keyed by its content.
    gap = likewise.Store(tmp_path / "gap", model=MODEL)
    gap.index(pd.DataFrame({"id": [7, None], "text": ["Markets rallied on Friday.", "Bonds fell."]}))
    keys = sorted(gap.articles()["key"])
    assert keys[0] == "7" and keys[1].startswith("sha256:"), keys
    # A news dataset's own column names (as a CSV's header is read): `Headline`, `content`,
    # `published`; a column the index has no field for is not read.
    named = likewise.Store(tmp_path / "named", model=MODEL)
    named.index(pd.DataFrame({"ID": ["n1"], "Headline": ["Rates rise"], "content": ["The bank raised rates."],
                              "published": ["3 March 2024"], "category": ["business"]}))
    row = named.articles().set_index("key").loc["n1"]
    assert (row["title"], row["date"]) == ("Rates rise", "2024-03-03"), row


def test_bad_input_raises_clear_exceptions(seeds_store, model, tmp_path):
    with pytest.raises(TypeError, match="list of strings"):
        model.embed("one string")
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        model.embed(["fine", 3])
    with pytest.raises(TypeError, match="dtype int64"):
        model.embed(np.arange(3))
    with pytest.raises(TypeError):
        model.embed([b"bytes"])
    with pytest.raises(likewise.StoreError, match="no store at"):
        likewise.Store(tmp_path / "missing", model=MODEL).query(RAFAH)
    s = likewise.Store(seeds_store, model=MODEL)
    with pytest.raises(likewise.InvalidRequestError, match="not a date"):
        s.query(RAFAH, since="soon")
    with pytest.raises(likewise.InvalidRequestError, match="empty"):
        s.query("   ")
    with pytest.raises(likewise.NotFoundError, match="no indexed article"):
        s.compare("003", "nothing-like-it")
    with pytest.raises(TypeError, match="k must be an int"):
        s.query(RAFAH, k="10")
    with pytest.raises(TypeError, match="min_score must be a number"):
        s.query(RAFAH, min_score="high")
    with pytest.raises(likewise.InvalidRequestError, match="level"):
        s.query(RAFAH, level="sentence")
    # Another precision than the store's: refused with both named.
    with pytest.raises(likewise.StoreError, match="precision f32, not bf16"):
        likewise.Store(seeds_store, model=likewise.Model(MODEL, precision="bf16")).query(RAFAH)
    # A damaged store.
    damaged = tmp_path / "damaged"
    shutil.copytree(seeds_store, damaged)
    manifest = damaged / "MANIFEST"
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0x40
    manifest.write_bytes(bytes(data))
    with pytest.raises(likewise.StoreError, match="damaged"):
        likewise.Store(damaged, model=MODEL).info()
    # A missing model folder.
    with pytest.raises(likewise.ModelError):
        likewise.Model(tmp_path / "no-model-here")
    with pytest.raises(ValueError, match="precision"):
        likewise.Model(MODEL, precision="f16")


def test_saved_searches_alert_on_new_articles_and_stories_keep_their_ids(model, tmp_path):
    seeds = sorted((ROOT / "seeds").glob("*.txt"))
    store = likewise.Store(tmp_path / "store", model=model)
    store.index([seeds[0], seeds[1], seeds[2]])
    before = store.stories(min_size=1)
    ids = {s["first"]["key"]: s["id"] for s in before["stories"]}
    saved = store.add_alert("shoukry", "Shoukry", mode="lexical")
    assert saved["name"] == "shoukry" and "vector" not in saved
    store.add_alert("rafah", RAFAH)
    assert [s["name"] for s in store.alerts()] == ["shoukry", "rafah"]
    # Bad calls: a name taken, a bad mode, nothing to follow, an unknown story.
    with pytest.raises(likewise.InvalidRequestError, match="already named"):
        store.add_alert("rafah", "x")
    with pytest.raises(likewise.InvalidRequestError, match="mode must be"):
        store.add_alert("m", "x", mode="fuzzy")
    with pytest.raises(likewise.InvalidRequestError, match="give the saved search a text"):
        store.add_alert("nothing")
    with pytest.raises(likewise.NotFoundError, match="no story 999"):
        store.add_alert("s", story=999)
    with pytest.raises(TypeError):
        store.add_alert("t", text=3)
    # New articles: those that match alert, once each.
    store.index([seeds[3], seeds[4]])
    log = store.alert_log()
    pairs = {(a["search"], Path(a["key"]).name) for a in log}
    assert ("shoukry", seeds[3].name) in pairs, pairs
    assert ("shoukry", seeds[4].name) not in pairs
    assert all(Path(a["key"]).name in (seeds[3].name, seeds[4].name) for a in log)
    assert len(pairs) == len(log)
    assert store.alert_log("shoukry", since="2000-01-01") == [a for a in log if a["search"] == "shoukry"]
    with pytest.raises(likewise.InvalidRequestError, match="not a date"):
        store.alert_log(since="yesterday-ish")
    # Indexing the same files again alerts nobody.
    store.index([seeds[3], seeds[4]])
    assert store.alert_log() == log
    # Stories: the old ids kept, the new articles placed, a timeline for each.
    after = store.stories(min_size=1)
    for key, sid in ids.items():
        holding = [s for s in after["stories"] if s["id"] == sid]
        assert holding, f"story {sid} of {key} lost its id"
    sid = after["stories"][0]["id"]
    timeline = store.story(sid)
    assert timeline["story"]["id"] == sid and timeline["timeline"]
    with pytest.raises(likewise.NotFoundError):
        store.story(987654)
    member = timeline["timeline"][0]["key"]
    assert store.story(article=member)["story"]["id"] == sid
    with pytest.raises(TypeError):
        store.story(sid, article=member)
    with pytest.raises(likewise.NotFoundError):
        store.story(article="no-such-article")
    # Removing keeps the log.
    store.remove_alert("rafah")
    with pytest.raises(likewise.NotFoundError):
        store.remove_alert("rafah")
    assert store.alert_log() == log
