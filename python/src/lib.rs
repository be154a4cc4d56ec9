//! `likewise._likewise`: the Python bindings of the likewise engine (PyO3, rust-numpy). They
//! convert at the edge only: texts in, NumPy arrays and the engine's JSON documents out (the
//! pure-Python package `likewise` turns those into dicts and DataFrames). The GIL is released
//! whenever the engine works; a Rust panic becomes a Python exception, never a dead interpreter.

use likewise::engine::docs::{ClusterRequest, DupesRequest, Level, QueryRequest};
use likewise::engine::{self, Engine, EngineError, ModelSpec};
use likewise::index::{CollectWarnings, IndexOptions};
use likewise::model::{Embedder, Precision};
use likewise::store::Store;
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

// The allocator of the `likewise` binary (see src/main.rs): embedding allocates and frees large
// buffers for every tensor op, which the system allocator turns into page faults.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (index 15 in libmimalloc-sys 0.1.49, pinned by Cargo.lock).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

pyo3::create_exception!(
    likewise,
    LikewiseError,
    PyException,
    "Any error of likewise."
);
pyo3::create_exception!(
    likewise,
    ModelError,
    LikewiseError,
    "The model is missing, damaged or cannot be fetched."
);
pyo3::create_exception!(
    likewise,
    StoreError,
    LikewiseError,
    "The store is missing, damaged, locked, or built with another model."
);
pyo3::create_exception!(
    likewise,
    NotFoundError,
    LikewiseError,
    "The store holds no such article."
);
pyo3::create_exception!(
    likewise,
    InvalidRequestError,
    LikewiseError,
    "The request makes no sense (a bad date, an empty passage, …)."
);

/// The engine's error as the Python exception of its kind, with the CLI's message.
fn py_err(e: EngineError) -> PyErr {
    let msg = e.to_string();
    match e {
        EngineError::Model(_) => ModelError::new_err(msg),
        EngineError::Store(_) => StoreError::new_err(msg),
        EngineError::NotFound(_) => NotFoundError::new_err(msg),
        EngineError::Invalid(_) | EngineError::Input(_) => InvalidRequestError::new_err(msg),
    }
}

fn precision(name: &str) -> PyResult<Precision> {
    Precision::from_name(name)
        .ok_or_else(|| PyValueError::new_err(format!("precision {name:?} is none of f32, bf16")))
}

fn to_json(doc: &impl serde::Serialize) -> String {
    serde_json::to_string(doc).expect("documents serialize")
}

/// A loaded sentence-transformer.
#[pyclass(frozen, module = "likewise._likewise")]
struct Model {
    encoder: Arc<dyn Embedder>,
}

#[pymethods]
impl Model {
    /// Finds the model as the CLI does (a folder, a name, or the default), fetching it when
    /// missing, and loads it.
    #[new]
    #[pyo3(signature = (name_or_path=None, precision="f32"))]
    fn new(py: Python<'_>, name_or_path: Option<PathBuf>, precision: &str) -> PyResult<Self> {
        let spec = ModelSpec {
            model: name_or_path.map(|p| p.to_string_lossy().into_owned()),
            precision: Some(self::precision(precision)?),
        };
        let p = spec.precision.unwrap_or_default();
        let encoder = py.detach(|| spec.load_in(p)).map_err(py_err)?;
        Ok(Model {
            encoder: Arc::new(encoder),
        })
    }

    /// One float32 row per text, in order: the vectors of `likewise embed`.
    fn embed<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let encoder = self.encoder.clone();
        let m = py
            .detach(move || {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                engine::embed_matrix(encoder.as_ref(), &refs, &|_| {})
            })
            .map_err(py_err)?;
        Ok(m.into_pyarray(py))
    }

    /// Embeds articles given as JSON lines exactly as `likewise index` stores them, storing
    /// nothing: the articles and their chunks (paragraph, window, text) as JSON with the inputs
    /// not used, the chunk vectors and the article vectors. `threads` bounds the cores used.
    #[allow(clippy::type_complexity)]
    #[pyo3(signature = (lines, origin="rows", threads=None))]
    fn embed_json_lines<'py>(
        &self,
        py: Python<'py>,
        lines: &str,
        origin: &str,
        threads: Option<usize>,
    ) -> PyResult<(String, Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<f32>>)> {
        let engine = Engine::with_embedder(std::path::Path::new("."), self.encoder.clone());
        let (seg, skipped, tokens) = py
            .detach(|| {
                in_pool(threads, || {
                    engine.embed_json_lines(origin, lines, &IndexOptions::default())
                })
            })
            .map_err(py_err)?;
        let dim = seg.dim;
        let chunks: Vec<serde_json::Value> = seg
            .chunks
            .iter()
            .map(|c| {
                let text = &seg.text[c.text_start as usize..(c.text_start as usize + c.text_len as usize)];
                serde_json::json!({"article": c.article, "paragraph": c.paragraph, "window": c.window, "text": text})
            })
            .collect();
        let doc = serde_json::json!({
            "articles": seg.articles,
            "chunks": chunks,
            "skipped": skipped,
            "tokens": tokens,
            "article_vectors": likewise::store::ArticleVectorMode::default().name(),
        });
        let shape = |v: Vec<f32>| {
            let rows = v.len() / dim.max(1);
            ndarray::Array2::from_shape_vec((rows, dim), v).expect("rows of dim")
        };
        Ok((
            to_json(&doc),
            shape(seg.chunk_vectors).into_pyarray(py),
            shape(seg.article_vectors).into_pyarray(py),
        ))
    }

    /// The model's identity (name, dimension, pooling, …) as JSON.
    fn identity_json(&self) -> String {
        to_json(self.encoder.identity())
    }

    #[getter]
    fn dim(&self) -> usize {
        self.encoder.identity().dim
    }

    #[getter]
    fn precision(&self) -> &'static str {
        self.encoder.precision().as_str()
    }
}

/// Runs `work` in a rayon pool of `threads` threads (kept for reuse), or in the global pool.
fn in_pool<T: Send>(threads: Option<usize>, work: impl FnOnce() -> T + Send) -> T {
    static POOLS: Mutex<Vec<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(Vec::new());
    let Some(n) = threads.filter(|&n| n > 0) else {
        return work();
    };
    let pool = {
        let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
        match pools.iter().find(|(t, _)| *t == n) {
            Some((_, p)) => p.clone(),
            None => match rayon::ThreadPoolBuilder::new().num_threads(n).build() {
                Ok(p) => {
                    let p = Arc::new(p);
                    pools.push((n, p.clone()));
                    p
                }
                // No pool of its own (threads cannot start): the global one does the work.
                Err(_) => return work(),
            },
        }
    };
    pool.install(work)
}

/// A distributed indexing job: holds the store's writer lock until it commits or is closed.
#[pyclass(frozen, module = "likewise._likewise")]
struct Job {
    job: Mutex<Option<engine::Job>>,
}

#[pymethods]
impl Job {
    /// What the parts need: the store's model, layout, next generation and (with `known`) the
    /// live articles' content hashes. Without them the document stays small at any store size;
    /// the hashes then travel with the rows (see [`Job::known`]).
    #[pyo3(signature = (known=true))]
    fn start_json(&self, known: bool) -> PyResult<String> {
        let slot = self.job.lock().unwrap_or_else(|p| p.into_inner());
        let job = slot
            .as_ref()
            .ok_or_else(|| StoreError::new_err("this job is closed"))?;
        let start = job.start();
        if known {
            return Ok(to_json(start));
        }
        Ok(to_json(&serde_json::json!({
            "model": start.model,
            "precision": start.precision,
            "compact": start.compact,
            "generation": start.generation,
            "known": {},
        })))
    }

    /// The store's live articles as two lists: keys, and how each was stored (its content hash and a fingerprint of its cut).
    fn known(&self) -> PyResult<(Vec<String>, Vec<String>)> {
        let slot = self.job.lock().unwrap_or_else(|p| p.into_inner());
        let job = slot
            .as_ref()
            .ok_or_else(|| StoreError::new_err("this job is closed"))?;
        Ok(job
            .start()
            .known
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .unzip())
    }

    /// Commits the parts (a JSON list of what each `write_part_json` returned) as one generation,
    /// and releases the lock.
    fn commit_json(&self, py: Python<'_>, parts: &str) -> PyResult<String> {
        let parts: Vec<likewise::index::PartWritten> = serde_json::from_str(parts)
            .map_err(|e| InvalidRequestError::new_err(format!("bad parts: {e}")))?;
        let mut slot = self.job.lock().unwrap_or_else(|p| p.into_inner());
        let mut job = slot
            .take()
            .ok_or_else(|| StoreError::new_err("this job is closed"))?;
        py.detach(|| job.commit(&parts).map(|r| to_json(&r)))
            .map_err(py_err)
    }

    /// Releases the lock without committing (the parts' files are removed by the next writer).
    fn close(&self) {
        self.job.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// A store opened at one generation: it keeps the memory maps alive for the arrays over them.
#[pyclass(frozen, module = "likewise._likewise")]
struct Snapshot {
    // Held, never read: the arrays' memory lives in this store's maps.
    _store: Arc<Store>,
}

/// A store and the engine over it.
#[pyclass(frozen, module = "likewise._likewise")]
struct StoreEngine {
    engine: Engine,
}

fn report_json(report: &likewise::index::IndexReport, skipped: Vec<String>) -> String {
    to_json(&serde_json::json!({"report": report, "skipped": skipped}))
}

#[pymethods]
impl StoreEngine {
    #[new]
    #[pyo3(signature = (path, model=None, model_name=None, precision=None))]
    fn new(
        path: PathBuf,
        model: Option<&Model>,
        model_name: Option<PathBuf>,
        precision: Option<&str>,
    ) -> PyResult<Self> {
        let engine = match model {
            Some(m) => Engine::with_embedder(&path, m.encoder.clone()),
            None => Engine::new(
                &path,
                ModelSpec {
                    model: model_name.map(|p| p.to_string_lossy().into_owned()),
                    precision: precision.map(self::precision).transpose()?,
                },
            ),
        };
        Ok(StoreEngine { engine })
    }

    fn query_json(&self, py: Python<'_>, request: &str) -> PyResult<String> {
        let req: QueryRequest = serde_json::from_str(request)
            .map_err(|e| InvalidRequestError::new_err(format!("bad query: {e}")))?;
        py.detach(|| self.engine.query(&req).map(|r| to_json(&r)))
            .map_err(py_err)
    }

    #[pyo3(signature = (key, text=None, nearest=10))]
    fn article_json(
        &self,
        py: Python<'_>,
        key: &str,
        text: Option<&str>,
        nearest: usize,
    ) -> PyResult<String> {
        py.detach(|| self.engine.article(key, text, nearest).map(|r| to_json(&r)))
            .map_err(py_err)
    }

    fn compare_json(&self, py: Python<'_>, a: &str, b: &str) -> PyResult<String> {
        py.detach(|| self.engine.compare(a, b).map(|r| to_json(&r)))
            .map_err(py_err)
    }

    fn clusters_json(&self, py: Python<'_>, request: &str) -> PyResult<String> {
        let req: ClusterRequest = serde_json::from_str(request)
            .map_err(|e| InvalidRequestError::new_err(format!("bad cluster request: {e}")))?;
        py.detach(|| self.engine.clusters(&req).map(|r| to_json(&r)))
            .map_err(py_err)
    }

    fn dupes_json(&self, py: Python<'_>, request: &str) -> PyResult<String> {
        let req: DupesRequest = serde_json::from_str(request)
            .map_err(|e| InvalidRequestError::new_err(format!("bad dupes request: {e}")))?;
        py.detach(|| self.engine.dupes(&req).map(|r| to_json(&r)))
            .map_err(py_err)
    }

    fn info_json(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| self.engine.info().map(|r| to_json(&r)))
            .map_err(py_err)
    }

    fn articles_json(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| self.engine.articles().map(|r| to_json(&r)))
            .map_err(py_err)
    }

    /// Saves a search (a JSON `SavedSearch`: name, query, story).
    fn alerts_add_json(&self, py: Python<'_>, search: &str) -> PyResult<String> {
        let search: engine::follow::SavedSearch = serde_json::from_str(search)
            .map_err(|e| InvalidRequestError::new_err(format!("bad saved search: {e}")))?;
        py.detach(|| self.engine.alerts_add(search).map(|r| to_json(&r)))
            .map_err(py_err)
    }

    fn alerts_list_json(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| self.engine.alerts_list().map(|r| to_json(&r)))
            .map_err(py_err)
    }

    fn alerts_remove_json(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        py.detach(|| self.engine.alerts_remove(name).map(|r| to_json(&r)))
            .map_err(py_err)
    }

    #[pyo3(signature = (name=None, since=None))]
    fn alerts_show_json(
        &self,
        py: Python<'_>,
        name: Option<&str>,
        since: Option<&str>,
    ) -> PyResult<String> {
        py.detach(|| self.engine.alerts_show(name, since).map(|r| to_json(&r)))
            .map_err(py_err)
    }

    #[pyo3(signature = (since=None, active=None, min_size=2))]
    fn stories_json(
        &self,
        py: Python<'_>,
        since: Option<&str>,
        active: Option<u32>,
        min_size: usize,
    ) -> PyResult<String> {
        py.detach(|| {
            self.engine
                .stories_list(since, active, min_size)
                .map(|r| to_json(&r))
        })
        .map_err(py_err)
    }

    fn story_json(&self, py: Python<'_>, id: u64) -> PyResult<String> {
        py.detach(|| self.engine.story_timeline(id).map(|r| to_json(&r)))
            .map_err(py_err)
    }

    fn story_of_json(&self, py: Python<'_>, article: &str) -> PyResult<String> {
        py.detach(|| self.engine.story_timeline_of(article).map(|r| to_json(&r)))
            .map_err(py_err)
    }

    fn map_json(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| self.engine.map().map(|r| to_json(r.as_ref())))
            .map_err(py_err)
    }

    /// Starts a distributed indexing job on this store (see `Job`).
    fn begin_job(&self, py: Python<'_>) -> PyResult<Job> {
        let job = py.detach(|| self.engine.begin_job()).map_err(py_err)?;
        Ok(Job {
            job: Mutex::new(Some(job)),
        })
    }

    /// One part of a job: embeds the new and changed articles among `lines` and writes their
    /// segment files (`file_stem`-NNNN.lkw); what it wrote, as JSON, for `Job.commit_json`.
    #[pyo3(signature = (start, file_stem, origin, lines, threads=None, articles_per_segment=2000))]
    #[allow(clippy::too_many_arguments)]
    fn write_part_json(
        &self,
        py: Python<'_>,
        start: &str,
        file_stem: &str,
        origin: &str,
        lines: &str,
        threads: Option<usize>,
        articles_per_segment: usize,
    ) -> PyResult<String> {
        let start: engine::JobStart = serde_json::from_str(start)
            .map_err(|e| InvalidRequestError::new_err(format!("bad job start: {e}")))?;
        py.detach(|| {
            in_pool(threads, || {
                self.engine.write_part(
                    &start,
                    file_stem,
                    origin,
                    lines,
                    &IndexOptions::default(),
                    articles_per_segment,
                )
            })
            .map(|r| to_json(&r))
        })
        .map_err(py_err)
    }

    /// Indexes files and folders; the report and the skipped inputs, as JSON.
    fn index_paths(&self, py: Python<'_>, paths: Vec<PathBuf>) -> PyResult<String> {
        py.detach(|| {
            let progress = CollectWarnings::default();
            let report = self
                .engine
                .index_paths(&paths, &IndexOptions::default(), &progress)?;
            Ok(report_json(&report, progress.into_warnings()))
        })
        .map_err(py_err)
    }

    /// Indexes articles given as JSON lines (the fields of a `.jsonl` input).
    fn index_json_lines(&self, py: Python<'_>, lines: &str) -> PyResult<String> {
        py.detach(|| {
            let progress = CollectWarnings::default();
            let report = self.engine.index_json_lines(
                "records",
                lines,
                &IndexOptions::default(),
                &progress,
            )?;
            Ok(report_json(&report, progress.into_warnings()))
        })
        .map_err(py_err)
    }

    /// The live vectors at `level` ("article" or "paragraph"): the article keys (JSON), for each
    /// row its article's index in them, its paragraph and window (paragraph level), and the
    /// arrays, one per segment: read-only views of the memory-mapped store where every row of
    /// the segment is live, else copies of the live rows.
    #[allow(clippy::type_complexity)]
    fn vectors<'py>(
        &self,
        py: Python<'py>,
        level: &str,
    ) -> PyResult<(
        String,
        Bound<'py, PyArray1<u32>>,
        Bound<'py, PyArray1<u32>>,
        Bound<'py, PyArray1<u32>>,
        Vec<Bound<'py, PyArray2<f32>>>,
    )> {
        let level = match level {
            "article" => Level::Article,
            "paragraph" => Level::Paragraph,
            other => {
                return Err(PyValueError::new_err(format!(
                    "level {other:?} is none of article, paragraph"
                )))
            }
        };
        let store = py.detach(|| self.engine.store()).map_err(py_err)?;
        let snapshot = Bound::new(
            py,
            Snapshot {
                _store: store.clone(),
            },
        )?;
        let blocks = engine::vector_blocks(&store, level);
        let keys = to_json(&blocks.keys);
        let mut arrays = Vec::with_capacity(blocks.blocks.len());
        for b in &blocks.blocks {
            let array = match &b.live {
                None => {
                    // SAFETY: the rows lie in a memory map owned by `store`, which `snapshot`
                    // keeps alive as the array's base object; the map is never written or moved
                    // while the store is open.
                    unsafe { PyArray2::borrow_from_array(&b.rows, snapshot.clone().into_any()) }
                }
                Some(rows) => b.rows.select(ndarray::Axis(0), rows).into_pyarray(py),
            };
            arrays.push(array);
        }
        Ok((
            keys,
            blocks.article.into_pyarray(py),
            blocks.paragraph.into_pyarray(py),
            blocks.window.into_pyarray(py),
            arrays,
        ))
    }
}

/// The duplicate tiers of article pairs found elsewhere (a similarity join): a JSON list of
/// `{"a": [title, [paragraph, …]], "b": [...], "score": cosine}`; returns, in order, `[tier or
/// null, overlap]` judged as `likewise dupes` judges its pairs.
#[pyfunction]
fn article_tiers_json(py: Python<'_>, pairs: &str) -> PyResult<String> {
    #[derive(serde::Deserialize)]
    struct Pair {
        a: (String, Vec<String>),
        b: (String, Vec<String>),
        score: f32,
    }
    let pairs: Vec<Pair> = serde_json::from_str(pairs)
        .map_err(|e| InvalidRequestError::new_err(format!("bad pairs: {e}")))?;
    let t = likewise::dupes::Thresholds::default();
    let out: Vec<(Option<&str>, f32)> = py.detach(|| {
        pairs
            .iter()
            .map(|p| {
                match likewise::dupes::article_tier((&p.a.0, &p.a.1), (&p.b.0, &p.b.1), p.score, &t)
                {
                    Some((tier, overlap)) => (Some(tier.name()), overlap),
                    None => (None, 0.0),
                }
            })
            .collect()
    });
    Ok(to_json(&out))
}

#[pymodule]
fn _likewise(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Keep freed memory for the next batch instead of returning it to the OS (as the binary does).
    // SAFETY: sets a process-wide option of this module's allocator; valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // As many threads as the CLI uses (the cores this process may use), unless the caller set
    // RAYON_NUM_THREADS; done at import, before candle or rayon starts a pool.
    engine::configure_threads(None);
    let py = m.py();
    m.add_class::<Model>()?;
    m.add_class::<StoreEngine>()?;
    m.add_class::<Snapshot>()?;
    m.add_class::<Job>()?;
    m.add_function(wrap_pyfunction!(article_tiers_json, m)?)?;
    m.add("LikewiseError", py.get_type::<LikewiseError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("StoreError", py.get_type::<StoreError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("InvalidRequestError", py.get_type::<InvalidRequestError>())?;
    Ok(())
}
