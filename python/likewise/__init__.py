"""likewise from Python: the engine of the `likewise` command, with NumPy arrays and DataFrames.

    import likewise
    model = likewise.Model()                      # all-MiniLM-L6-v2, fetched when missing
    vectors = model.embed(["a passage", "another"])   # float32, shape (2, 384)
    store = likewise.Store("bbc.store")
    store.index(["corpus/bbc"])                   # files, folders, or dicts of the JSONL fields
    store.query("Blinken warned against a Rafah offensive", k=5)   # the CLI's JSON document
    store.query_df(like="business/267")           # the hits as a pandas DataFrame
    ids, matrix = store.vectors("paragraph")      # read-only arrays over the memory-mapped store

Every method returns the document `likewise … --format json` prints for the same request; errors
raise `likewise.LikewiseError` subclasses with the CLI's messages.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from . import _likewise
from ._likewise import (
    InvalidRequestError,
    LikewiseError,
    ModelError,
    NotFoundError,
    StoreError,
)

__all__ = [
    "Model",
    "Store",
    "LikewiseError",
    "ModelError",
    "StoreError",
    "NotFoundError",
    "InvalidRequestError",
]

PathLike = Union[str, "os.PathLike[str]"]


def _strings(name: str, values: Any) -> list:
    """`values` as a list of str, or a TypeError naming the first that is not one."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a list of strings, not one {type(values).__name__} (wrap it: [text])")
    if isinstance(values, np.ndarray) and values.dtype.kind not in ("U", "O"):
        raise TypeError(f"{name} must hold strings; got an array of dtype {values.dtype}")
    try:
        out = list(values)
    except TypeError:
        raise TypeError(f"{name} must be a list of strings, not {type(values).__name__}") from None
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise TypeError(f"{name}[{i}] is {type(v).__name__}, not str")
    return out


def _int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}")
    # The engine counts in 64 bits; anything larger cannot mean more than "all".
    if value > 2**63 - 1:
        raise ValueError(f"{name} must be at most 2**63 - 1")
    return int(value)


def _missing(value: Any) -> bool:
    """None, NaN or NaT: how pandas and NumPy say a field is missing."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return False


# The columns a DataFrame's fields are read from, first match, case as written or lower: the
# names `likewise index` reads from a CSV's header.
_COLUMNS = {
    "text": ("text", "body", "content", "article"),
    "id": ("id",),
    "title": ("title", "headline"),
    "date": ("date", "published"),
    "source": ("source", "publisher"),
    "url": ("url", "link"),
}


def _records(items: Any) -> Optional[list]:
    """The rows of a DataFrame (pandas, or one with `to_dicts` like polars) as dicts with the
    index's fields (see `_COLUMNS`; other columns are left out), else None."""
    columns = getattr(items, "columns", None)
    if columns is None or isinstance(items, (str, os.PathLike, dict)):
        return None
    names = [str(c) for c in columns]
    lower = {}
    for name in names:
        lower.setdefault(name.strip().lower(), name)
    chosen = {}
    for field, aliases in _COLUMNS.items():
        found = next((lower[a] for a in aliases if a in lower), None)
        if found is not None:
            chosen[field] = found
    if "text" not in chosen:
        raise ValueError(f"the DataFrame has no text column: none named {', '.join(_COLUMNS['text'])} (its columns: {', '.join(names)})")
    if hasattr(items, "to_dicts"):
        rows = items.to_dicts()
    elif hasattr(items, "to_dict"):
        rows = items.to_dict("records")
    else:
        raise TypeError(f"{type(items).__name__} has columns but no rows to read: give a pandas DataFrame or dicts")
    by_name = {str(c): c for c in columns}
    return [{field: row[by_name[col]] for field, col in chosen.items()} for row in rows]


def _number(name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    return float(value)


def _one_or_many(name: str, value: Any) -> Optional[list]:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return _strings(name, value)


class Model:
    """A sentence-transformer run by likewise: `Model(name_or_path=None, precision="f32")`.

    The model is found as the CLI finds it (a folder, a known name, or the default
    all-MiniLM-L6-v2) and fetched when missing.
    """

    def __init__(self, name_or_path: Optional[PathLike] = None, precision: str = "f32"):
        # As the CLI does: without a model named, LIKEWISE_MODEL (a folder or a name) when set.
        if name_or_path is None:
            name_or_path = os.environ.get("LIKEWISE_MODEL") or None
        if name_or_path is not None and not isinstance(name_or_path, (str, os.PathLike)):
            raise TypeError(f"name_or_path must be a str or a path, not {type(name_or_path).__name__}")
        if not isinstance(precision, str):
            raise TypeError(f"precision must be a str, not {type(precision).__name__}")
        self._native = _likewise.Model(None if name_or_path is None else os.fspath(name_or_path), precision)
        self.identity = json.loads(self._native.identity_json())

    @property
    def dim(self) -> int:
        return self._native.dim

    @property
    def precision(self) -> str:
        return self._native.precision

    def __repr__(self) -> str:
        return f"likewise.Model({self.identity['name']!r}, dim={self.dim}, precision={self.precision!r})"

    def embed(self, texts: Sequence[str], batch_size: Optional[int] = None, show_progress: bool = False) -> np.ndarray:
        """One float32 row per text, shape (len(texts), dim): the vectors of `likewise embed`.

        `batch_size` texts go to the engine at a time (it forms its own batches inside, by
        length); the GIL is released while it works. `show_progress` reports on stderr.
        """
        texts = _strings("texts", texts)
        if batch_size is None:
            batch_size = max(len(texts), 1) if not show_progress else 256
        batch_size = _int("batch_size", batch_size)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if batch_size >= len(texts):
            return self._native.embed(texts)
        parts = []
        for start in range(0, len(texts), batch_size):
            parts.append(self._native.embed(texts[start : start + batch_size]))
            if show_progress:
                done = min(start + batch_size, len(texts))
                print(f"\rlikewise: {done}/{len(texts)} texts embedded", end="", file=sys.stderr, flush=True)
        if show_progress:
            print(file=sys.stderr)
        return np.concatenate(parts, axis=0)


class Store:
    """A likewise store (the folder `likewise index` writes): `Store(path, model=None, precision=None)`.

    `model` is a `Model` to embed with, or a model name or folder; by default the store's own
    model (all-MiniLM-L6-v2) in the store's own precision. Nothing is opened until it is used.
    """

    def __init__(self, path: PathLike = ".likewise", model: Union[Model, PathLike, None] = None, precision: Optional[str] = None):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or a path, not {type(path).__name__}")
        self.path = os.fspath(path)
        if model is None:
            model = os.environ.get("LIKEWISE_MODEL") or None
        if isinstance(model, Model):
            self._native = _likewise.StoreEngine(self.path, model._native, None, None)
        elif model is None or isinstance(model, (str, os.PathLike)):
            self._native = _likewise.StoreEngine(self.path, None, None if model is None else os.fspath(model), precision)
        else:
            raise TypeError(f"model must be a likewise.Model, a name or a folder, not {type(model).__name__}")

    def __repr__(self) -> str:
        return f"likewise.Store({self.path!r})"

    # -- writing ------------------------------------------------------------------------------

    def index(self, paths_or_records: Union[PathLike, Iterable[Union[PathLike, dict]]]) -> dict:
        """Indexes files and folders (`.txt`, `.md`, `.jsonl`, `.json`, `.csv`, `.tsv`, `.parquet`)
        and/or records: dicts
        with the JSONL fields (`text`, and `id`, `title`, `date`, `source`, `url`). Returns
        `{"report": …, "skipped": [reason, …]}`; unchanged articles are not embedded again.
        A DataFrame (pandas or polars) is taken row by row as records: a text column (`text`, or
        `body`, `content`, `article`), and any of `id`, `title` (or `headline`), `date` (or
        `published`), `source` (or `publisher`), `url` (or `link`); other columns are not read;
        missing values (None, NaN, NaT) are fields left out."""
        frame_rows = _records(paths_or_records)
        if frame_rows is not None:
            items = frame_rows
        elif isinstance(paths_or_records, (str, os.PathLike, dict)):
            items = [paths_or_records]
        else:
            items = list(paths_or_records)
        paths, records = [], []
        for i, item in enumerate(items):
            if isinstance(item, dict):
                records.append(item)
            elif isinstance(item, (str, os.PathLike)):
                paths.append(os.fspath(item))
            else:
                raise TypeError(f"item {i} is {type(item).__name__}: give paths or dicts")
        result = {"report": None, "skipped": []}
        if paths:
            r = json.loads(self._native.index_paths(paths))
            result = {"report": r["report"], "skipped": r["skipped"]}
        if records:
            lines = []
            for i, rec in enumerate(records):
                rec = {str(k): v for k, v in rec.items() if not _missing(v)}
                rid = rec.get("id")
                # pandas keeps whole numbers with a gap among them as floats (1.0, NaN): the id
                # is still the whole number.
                if isinstance(rid, (float, np.floating)) and float(rid).is_integer():
                    rec["id"] = int(rid)
                text = rec.get("text")
                if text is None:
                    raise TypeError(f"record {i}: `text` is missing (absent, None or NaN)")
                if not isinstance(text, str):
                    raise TypeError(f"record {i}: `text` must be a str, not {type(text).__name__}")
                try:
                    lines.append(json.dumps(rec, ensure_ascii=False, default=str, allow_nan=False))
                except (TypeError, ValueError) as e:
                    raise TypeError(f"record {i} cannot be written as JSON: {e}") from None
            r = json.loads(self._native.index_json_lines("\n".join(lines) + "\n"))
            if result["report"] is None:
                result = {"report": r["report"], "skipped": r["skipped"]}
            else:
                for k, v in r["report"].items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        result["report"][k] += v
                result["skipped"] += r["skipped"]
        if result["report"] is None:
            raise ValueError("nothing to index: give paths or records")
        return result

    # -- reading ------------------------------------------------------------------------------

    def query(
        self,
        text: Optional[Union[str, Sequence[str]]] = None,
        like: Optional[Union[str, Sequence[str]]] = None,
        level: str = "article",
        k: int = 10,
        min_score: Optional[float] = None,
        source: Optional[Union[str, Sequence[str]]] = None,
        since: Optional[str] = None,
        until: Optional[str] = None,
        path: Optional[Union[str, Sequence[str]]] = None,
        scan: Optional[str] = None,
        mode: str = "hybrid",
    ) -> dict:
        """Articles (or paragraphs, `level="paragraph"`) like a passage, several passages (a
        list), or indexed articles (`like`): the document of `likewise query --format json`.
        `mode`: "hybrid" (words and meaning, the default), "semantic" or "lexical"; in every
        mode `"a phrase"` must occur and `-word` must not."""
        if mode not in ("hybrid", "semantic", "lexical"):
            raise InvalidRequestError(
                f"mode must be 'hybrid', 'semantic' or 'lexical', not {mode!r}"
            )
        req: dict = {"level": level, "k": _int("k", k), "mode": mode}
        if isinstance(text, str):
            req["text"] = text
        elif text is not None:
            req["texts"] = _strings("text", text)
        if like is not None:
            req["like"] = _one_or_many("like", like)
        ms = _number("min_score", min_score)
        if ms is not None:
            req["min_score"] = ms
        for name, value in (("source", source), ("path", path)):
            v = _one_or_many(name, value)
            if v is not None:
                req[name] = v
        for name, value in (("since", since), ("until", until), ("scan", scan)):
            if value is not None:
                if not isinstance(value, str):
                    raise TypeError(f"{name} must be a str, not {type(value).__name__}")
                req[name] = value
        if level not in ("article", "paragraph"):
            raise InvalidRequestError(f"level must be 'article' or 'paragraph', not {level!r}")
        return json.loads(self._native.query_json(json.dumps(req)))

    def article(self, key: str, text: Optional[str] = None, nearest: int = 10) -> dict:
        """One article whole: paragraphs (scored against `text` when given), nearest articles,
        duplicate pairs."""
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, not {type(key).__name__}")
        return json.loads(self._native.article_json(key, text, _int("nearest", nearest, 0)))

    def compare(self, a: str, b: str) -> dict:
        """Two articles aligned paragraph by paragraph (`likewise compare A B`)."""
        for name, v in (("a", a), ("b", b)):
            if not isinstance(v, str):
                raise TypeError(f"{name} must be a str, not {type(v).__name__}")
        return json.loads(self._native.compare_json(a, b))

    def clusters(self, by: str = "topic", k: Optional[int] = None, threshold: Optional[float] = None, keywords: int = 6) -> dict:
        """Topics (k-means, k by silhouette unless given) or stories (`by="story"`)."""
        req: dict = {"by": by, "keywords": _int("keywords", keywords, 0)}
        if k is not None:
            req["k"] = _int("k", k)
        t = _number("threshold", threshold)
        if t is not None:
            req["threshold"] = t
        return json.loads(self._native.clusters_json(json.dumps(req)))

    def dupes(self, level: str = "both", tier: Optional[Union[str, Sequence[str]]] = None) -> dict:
        """Exact, near-copy and rewrite pairs of articles and paragraphs (`likewise dupes`)."""
        req: dict = {"level": level}
        tiers = _one_or_many("tier", tier)
        if tiers:
            req["tier"] = tiers
        return json.loads(self._native.dupes_json(json.dumps(req)))

    def info(self) -> dict:
        """What the store holds (`likewise info --format json`)."""
        return json.loads(self._native.info_json())

    def add_alert(
        self,
        name: str,
        text: Optional[str] = None,
        story: Optional[int] = None,
        mode: str = "hybrid",
        level: str = "article",
        min_score: Optional[float] = None,
        source: Optional[Union[str, Sequence[str]]] = None,
        path: Optional[Union[str, Sequence[str]]] = None,
    ) -> dict:
        """Saves a search (`likewise alerts add`): new articles that match `text` (or join
        `story`) alert, from the next commit on. Returns the saved search."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if text is not None and not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        if story is not None:
            story = _int("story", story, 0)
        if mode not in ("hybrid", "semantic", "lexical"):
            raise InvalidRequestError(f"mode must be 'hybrid', 'semantic' or 'lexical', not {mode!r}")
        if level not in ("article", "paragraph"):
            raise InvalidRequestError(f"level must be 'article' or 'paragraph', not {level!r}")
        query: dict = {"mode": mode, "level": level}
        if text is not None:
            query["text"] = text
        ms = _number("min_score", min_score)
        if ms is not None:
            query["min_score"] = ms
        for key, value in (("source", source), ("path", path)):
            v = _one_or_many(key, value)
            if v is not None:
                query[key] = v
        search = {"name": name, "query": query, "created": 0}
        if story is not None:
            search["story"] = story
        return json.loads(self._native.alerts_add_json(json.dumps(search)))

    def alerts(self) -> list:
        """The saved searches (`likewise alerts list`)."""
        return json.loads(self._native.alerts_list_json())

    def remove_alert(self, name: str) -> dict:
        """Removes a saved search; its alerts stay in the log."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        return json.loads(self._native.alerts_remove_json(name))

    def alert_log(self, name: Optional[str] = None, since: Optional[str] = None) -> list:
        """Recorded alerts, oldest first (`likewise alerts show`): of one saved search or all,
        recorded on or after `since`."""
        for key, value in (("name", name), ("since", since)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{key} must be a str, not {type(value).__name__}")
        return json.loads(self._native.alerts_show_json(name, since))

    def stories(self, since: Optional[str] = None, active: Optional[int] = None, min_size: int = 2) -> dict:
        """The stories, with ids that never change meaning (`likewise stories`)."""
        if since is not None and not isinstance(since, str):
            raise TypeError(f"since must be a str, not {type(since).__name__}")
        if active is not None:
            active = _int("active", active, 0)
        return json.loads(self._native.stories_json(since, active, _int("min_size", min_size)))

    def story(self, id: Optional[int] = None, article: Optional[str] = None) -> dict:
        """One story's timeline (`likewise story ID`), or that of the story holding `article` (a
        key): a merged story's id resolves to the story it joined."""
        if (id is None) == (article is None):
            raise TypeError("give a story id or an article key, not both")
        if article is not None:
            if not isinstance(article, str):
                raise TypeError(f"article must be a str, not {type(article).__name__}")
            return json.loads(self._native.story_of_json(article))
        return json.loads(self._native.story_json(_int("id", id, 0)))

    def map(self) -> dict:
        """Every article's position on the 2-D map and its topic (as `likewise serve` draws it)."""
        return json.loads(self._native.map_json())

    def vectors(self, level: str = "article"):
        """`(ids, vectors)`: the live vectors at `level` as a read-only float32 array, rows in store
        order. Article level: `ids` is the list of article keys. Paragraph level: `ids` is a
        `ParagraphIds`, a sequence of `(key, paragraph, window)` backed by NumPy arrays (cheap at
        millions of rows). Where the store is one segment with no deleted article the array is a
        view of the memory-mapped file (no copy); otherwise the live rows are copied."""
        if level not in ("article", "paragraph"):
            raise ValueError(f"level must be 'article' or 'paragraph', not {level!r}")
        keys_json, article, paragraph, window, blocks = self._native.vectors(level)
        keys = json.loads(keys_json)
        if len(blocks) == 1:
            matrix = blocks[0]
        elif blocks:
            matrix = np.concatenate(blocks, axis=0)
        else:
            matrix = np.zeros((0, self.info()["model"]["dim"]), dtype=np.float32)
        matrix.flags.writeable = False
        if level == "article":
            return keys, matrix
        return ParagraphIds(keys, article, paragraph, window), matrix

    # -- DataFrames ---------------------------------------------------------------------------

    def articles(self):
        """Every article as a row of a pandas DataFrame: key, id, path, title, date, source, url,
        paragraphs."""
        pd = _pandas()
        rows = json.loads(self._native.articles_json())
        return _frame(pd, rows, ARTICLE_COLUMNS)

    def query_df(self, *args, **kwargs):
        """`query(...)` as a pandas DataFrame, one row per hit (several queries: a `query` column
        numbers them)."""
        pd = _pandas()
        doc = self.query(*args, **kwargs)
        rows = []
        if "queries" in doc:
            for i, q in enumerate(doc["queries"]):
                for h in q["hits"]:
                    rows.append(_hit_row(h, i))
        else:
            rows = [_hit_row(h, 0) for h in doc["hits"]]
        return _frame(pd, rows, HIT_COLUMNS)


class ParagraphIds:
    """Which paragraph window each row of `Store.vectors("paragraph")` is: row `i` is
    `(keys[article[i]], paragraph[i], window[i])`. The arrays are NumPy uint32."""

    def __init__(self, keys, article, paragraph, window):
        self.keys, self.article, self.paragraph, self.window = keys, article, paragraph, window
        for a in (article, paragraph, window):
            a.flags.writeable = False

    def __len__(self):
        return len(self.article)

    def __getitem__(self, i):
        return (self.keys[self.article[i]], int(self.paragraph[i]), int(self.window[i]))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self):
        return f"ParagraphIds({len(self)} rows of {len(self.keys)} articles)"

    def frame(self):
        """The ids as a pandas DataFrame: key, paragraph, window."""
        pd = _pandas()
        return pd.DataFrame({"key": pd.Series(self.keys, dtype="string").take(self.article).reset_index(drop=True),
                             "paragraph": self.paragraph, "window": self.window})


ARTICLE_COLUMNS = {
    "key": "string", "id": "string", "path": "string", "title": "string", "date": "string",
    "source": "string", "url": "string", "paragraphs": "int64",
}
HIT_COLUMNS = {
    "query": "int64", "rank": "int64", "score": "float32", "key": "string", "id": "string",
    "path": "string", "title": "string", "date": "string", "source": "string", "url": "string",
    "paragraph": "Int64", "window": "Int64", "paragraph_score": "Float32", "text": "string",
    "semantic_score": "Float32", "semantic_rank": "Int64", "lexical_score": "Float32",
    "lexical_rank": "Int64",
}


def _hit_row(hit: dict, query: int) -> dict:
    """A hit as a row: each half's verdict in columns of its own (`semantic_score`, …)."""
    row = dict(hit, query=query)
    for half in ("semantic", "lexical"):
        verdict = row.pop(half, None) or {}
        row[f"{half}_score"] = verdict.get("score")
        row[f"{half}_rank"] = verdict.get("rank")
    return row


def _pandas():
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("DataFrames need pandas: pip install pandas") from None
    return pd


def _frame(pd, rows: list, columns: dict):
    data = {c: [r.get(c) for r in rows] for c in columns}
    frame = pd.DataFrame(data, columns=list(columns))
    return frame.astype(columns)
