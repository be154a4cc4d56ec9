//! The engine's requests and results, as typed documents: what the CLI prints with
//! `--format json`, what `likewise serve` returns, what the Python module hands over. One
//! serializer (serde) makes all of them, so the same request gives the same document everywhere.

/// Defined with the store (the export reads it too); named here with the other documents.
pub use crate::store::Level;
use serde::{Deserialize, Serialize};

/// How a query ranks: by words and meaning together (`hybrid`), by meaning alone (the
/// sentence-transformer's cosine) or by words alone (BM25).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    #[default]
    Hybrid,
    Semantic,
    Lexical,
}

impl SearchMode {
    pub fn name(self) -> &'static str {
        match self {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Semantic => "semantic",
            SearchMode::Lexical => "lexical",
        }
    }
}

/// How paragraph vectors are scanned: every exact vector, or candidates from a compact copy
/// first (scores are exact either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scan {
    Exact,
    Int8,
    Binary,
}

/// One string or a list of them (`"like": "003"` or `"like": ["003", "004"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "OneOrMany")]
pub struct Strings(pub Vec<String>);

/// Its schema says what its deserializer takes: a string, or an array of strings.
impl utoipa::PartialSchema for Strings {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some("One string or a list of them."))
            .into()
    }
}

impl utoipa::ToSchema for Strings {}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for Strings {
    fn from(v: OneOrMany) -> Self {
        match v {
            OneOrMany::One(s) => Strings(vec![s]),
            OneOrMany::Many(v) => Strings(v),
        }
    }
}

impl Strings {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn default_k() -> usize {
    10
}

/// A similarity query: passages (`text`, or several `texts` answered in one pass) or indexed
/// articles (`like`), with the level, the number of results and filters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// A passage, names or a quotation: `"a phrase"` must occur, `-word` must not, the rest is
    /// free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Several passages answered in one pass (at most 100 per request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub texts: Vec<String>,
    /// Indexed articles (key, path or file name); each is left out of its own results.
    #[serde(default, skip_serializing_if = "Strings::is_empty")]
    pub like: Strings,
    /// Rank whole articles (`article`, the default) or paragraphs.
    #[serde(default)]
    pub level: Level,
    /// Words and meaning (`hybrid`, the default), `semantic` or `lexical`.
    #[serde(default)]
    pub mode: SearchMode,
    /// How many hits (10 by default; the server caps it with --max-k).
    #[serde(default = "default_k")]
    #[schema(default = 10)]
    pub k: usize,
    /// Leave out hits scored below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f32>,
    /// Source or agency credit, any of them.
    #[serde(default, skip_serializing_if = "Strings::is_empty")]
    pub source: Strings,
    /// Days, inclusive, in any spelling the indexer understands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Globs on the article's path or id, any of them.
    #[serde(default, skip_serializing_if = "Strings::is_empty")]
    pub path: Strings,
    /// Default: the store's compact copies when it keeps some, else exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<Scan>,
}

impl Default for QueryRequest {
    fn default() -> Self {
        QueryRequest {
            text: None,
            texts: Vec::new(),
            like: Strings::default(),
            level: Level::Article,
            mode: SearchMode::default(),
            k: default_k(),
            min_score: None,
            source: Strings::default(),
            since: None,
            until: None,
            path: Strings::default(),
            scan: None,
        }
    }
}

/// Which article a result names: `key` always (what `GET /api/articles/{key}` and `like`
/// take); `path` when it came from a file (shown relative to the working folder); `id` when its
/// key is not its path (a JSONL id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArticleRef {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub title: String,
}

impl ArticleRef {
    /// How a person finds the article: its path, its id, or both when one file holds many
    /// articles (a JSONL record: `id (path)`), else its key.
    pub fn place(&self) -> String {
        match (&self.id, &self.path) {
            (Some(id), Some(path)) => format!("{id} ({path})"),
            (None, Some(place)) | (Some(place), None) => place.clone(),
            (None, None) => self.key.clone(),
        }
    }
}

/// When and where an article appeared, as far as its input said.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Dateline {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Dateline {
    pub fn of(meta: &crate::text::Metadata) -> Dateline {
        Dateline {
            date: meta.date.clone(),
            source: meta.source.clone(),
            url: meta.url.clone(),
        }
    }
}

/// What a query asked for, echoed in its answer.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum QueryLabel {
    Text { text: String },
    Like { like: String },
}

/// One result: an article (article level, with the paragraph that matched it best) or a
/// paragraph (paragraph level).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Hit {
    #[serde(flatten)]
    pub article: ArticleRef,
    pub rank: usize,
    pub score: f32,
    #[serde(flatten)]
    pub dateline: Dateline,
    /// 0-based paragraph number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paragraph: Option<u32>,
    /// The window within a paragraph too long for the model (paragraph level).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The best paragraph's own score (article level).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paragraph_score: Option<f32>,
    /// Hybrid and lexical modes: the semantic half's verdict (cosine similarity, and rank among
    /// the semantic candidates when it was one of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub semantic: Option<HalfDoc>,
    /// Hybrid and lexical modes: the lexical half's verdict (BM25 score, 0 when no word
    /// matched, and rank among the lexical candidates when it was one of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lexical: Option<HalfDoc>,
    /// The words of `text` that match the query's words (as written there: "Blinken's" for
    /// `Blinken`), for marking them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<String>,
}

/// One half's verdict on a hybrid hit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HalfDoc {
    pub score: f32,
    /// 1-based; absent when the document ranked past the candidates that half proposed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
}

/// The answer to one query.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QueryAnswer {
    pub query: QueryLabel,
    pub hits: Vec<Hit>,
}

/// The answer to a query request: one query's, or several answered in one pass.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum QueryResult {
    One {
        query: QueryLabel,
        level: Level,
        mode: SearchMode,
        hits: Vec<Hit>,
    },
    Many {
        level: Level,
        mode: SearchMode,
        queries: Vec<QueryAnswer>,
    },
}

impl QueryResult {
    pub fn level(&self) -> Level {
        match self {
            QueryResult::One { level, .. } | QueryResult::Many { level, .. } => *level,
        }
    }

    /// Every query with its hits.
    pub fn answers(&self) -> Vec<(&QueryLabel, &[Hit])> {
        match self {
            QueryResult::One { query, hits, .. } => vec![(query, hits.as_slice())],
            QueryResult::Many { queries, .. } => queries
                .iter()
                .map(|q| (&q.query, q.hits.as_slice()))
                .collect(),
        }
    }
}

/// A paragraph of an article, with its similarity to a passage when one was given.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ParagraphDoc {
    pub paragraph: u32,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

/// One article whole: metadata, paragraphs, nearest articles and duplicate pairs it is in.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ArticleDoc {
    #[serde(flatten)]
    pub article: ArticleRef,
    #[serde(flatten)]
    pub dateline: Dateline,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credit: Option<String>,
    pub paragraphs: Vec<ParagraphDoc>,
    pub nearest: Vec<Hit>,
    pub duplicates: Vec<DupePairDoc>,
}

/// A paragraph named in a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ParagraphRef {
    pub paragraph: u32,
    pub text: String,
}

/// Two paragraphs matched by `compare`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MatchDoc {
    /// `shared` (verbatim or nearly) or `paraphrased`.
    pub relation: crate::compare::Relation,
    pub a: ParagraphRef,
    pub b: ParagraphRef,
    pub score: f32,
    pub overlap: f32,
}

/// Two articles aligned paragraph by paragraph.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CompareResult {
    pub a: ArticleRef,
    pub b: ArticleRef,
    /// Every paragraph of each side, in order (what `matches` and `only_*` number).
    #[serde(skip)]
    pub paragraphs_a: usize,
    #[serde(skip)]
    pub paragraphs_b: usize,
    pub matches: Vec<MatchDoc>,
    pub only_a: Vec<ParagraphRef>,
    pub only_b: Vec<ParagraphRef>,
}

/// Topics or stories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// Broad subjects (k-means; k chosen by silhouette unless given).
    #[default]
    Topic,
    /// Coverage of the same event (average linkage cut at a threshold).
    Story,
}

fn default_keywords() -> usize {
    6
}

/// What `cluster` is asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClusterRequest {
    /// `topic` (the default: k-means, k chosen by silhouette) or `story` (coverage of one event).
    #[serde(default)]
    #[param(value_type = Option<By>)]
    pub by: By,
    /// Topics: fix their number instead of choosing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// Stories: the mean cosine below which two groups are not merged (0.84 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Keywords per cluster (6 by default).
    #[serde(default = "default_keywords")]
    #[param(value_type = Option<usize>)]
    pub keywords: usize,
}

impl Default for ClusterRequest {
    fn default() -> Self {
        ClusterRequest {
            by: By::Topic,
            k: None,
            threshold: None,
            keywords: default_keywords(),
        }
    }
}

/// A cluster member (or outlier).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MemberDoc {
    #[serde(flatten)]
    pub article: ArticleRef,
    /// Cosine to the cluster's centre.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// A first and last day.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DateSpan {
    pub from: String,
    pub to: String,
}

/// A labelled cluster.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ClusterDoc {
    pub id: usize,
    /// The most central member's headline.
    pub label: String,
    pub keywords: Vec<String>,
    pub size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dates: Option<DateSpan>,
    /// Most central first.
    pub members: Vec<MemberDoc>,
}

/// Clusters of the whole store.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ClustersResult {
    pub by: By,
    /// How the grouping was made, e.g. how k was chosen.
    pub method: String,
    pub clusters: Vec<ClusterDoc>,
    pub outliers: Vec<MemberDoc>,
    /// Articles clustered, and the time it took (for the report on stderr; not in the document).
    #[serde(skip)]
    pub articles: usize,
    #[serde(skip)]
    pub seconds: f64,
}

/// Duplicate tiers.
pub use crate::dupes::Tier;

/// Article pairs, paragraph pairs, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DupeLevel {
    Article,
    Paragraph,
    #[default]
    Both,
}

/// What `dupes` is asked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DupesRequest {
    #[serde(default)]
    pub level: DupeLevel,
    /// Only these tiers (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tier: Vec<TierName>,
}

/// A tier as requests name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TierName {
    Exact,
    NearCopy,
    Rewrite,
}

impl TierName {
    pub fn tier(self) -> Tier {
        match self {
            TierName::Exact => Tier::Exact,
            TierName::NearCopy => Tier::NearCopy,
            TierName::Rewrite => Tier::Rewrite,
        }
    }
}

/// One side of a duplicate pair.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SideDoc {
    #[serde(flatten)]
    pub article: ArticleRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paragraph: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A pair of copied or rewritten articles or paragraphs.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DupePairDoc {
    pub tier: Tier,
    pub level: crate::dupes::Level,
    pub score: f32,
    pub overlap: f32,
    pub a: SideDoc,
    pub b: SideDoc,
}

/// Every duplicate pair of the store.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DupesResult {
    pub pairs: Vec<DupePairDoc>,
    #[serde(skip)]
    pub articles: usize,
    #[serde(skip)]
    pub seconds: f64,
}

/// What the store holds.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct InfoResult {
    pub store: String,
    pub articles: usize,
    pub paragraphs: usize,
    pub chunks: usize,
    pub segments: usize,
    pub generation: u64,
    pub bytes_on_disk: u64,
    pub model: crate::model::ModelIdentity,
    pub precision: String,
    /// How the article vectors are made (`whole-text-and-lede`, or `paragraphs-and-lead` in
    /// stores made before that).
    pub article_vectors: crate::store::ArticleVectorMode,
    pub compact: Option<crate::compact::Compact>,
    pub compact_bytes: u64,
    /// The analysis of the lexical indexes (absent: a store made before lexical search), their
    /// bytes, and how many segments lack a usable one (rebuilt by the next `likewise index`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lexical: Option<String>,
    pub lexical_bytes: u64,
    pub lexical_missing: usize,
    /// When the current generation was committed (seconds since 1970, UTC), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed_unix: Option<u64>,
}

/// What `likewise verify` checked: every byte of the store against its CRCs.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VerifyResult {
    pub store: String,
    pub segments: usize,
    pub compact_files: usize,
    pub bytes_checked: u64,
    /// Compact copies that failed a check, each naming its file.
    pub damaged_compact: Vec<String>,
    pub lexical_indexes: usize,
    /// Lexical indexes missing or failing a check, each naming its files.
    pub damaged_lexical: Vec<String>,
    pub intact: bool,
    pub seconds: f64,
}

/// A point of the map: one article.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MapPoint {
    pub key: String,
    pub title: String,
    pub x: f32,
    pub y: f32,
    /// Its topic cluster's id (0 for outliers).
    pub cluster: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// A 2-D map of every article, from a projection of the article vectors that keeps
/// neighbours together, coloured by topic.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MapResult {
    pub method: String,
    pub generation: u64,
    pub points: Vec<MapPoint>,
    pub clusters: Vec<ClusterDoc>,
    pub seconds: f64,
}

/// One stored article, without its text (a row of `Store.articles()` in Python).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ArticleListing {
    #[serde(flatten)]
    pub article: ArticleRef,
    #[serde(flatten)]
    pub dateline: Dateline,
    pub paragraphs: u32,
}
