//! The lexical half of hybrid search: BM25 over the words of articles and paragraphs, by tantivy.
//!
//! Each store segment has one small tantivy index beside it (a folder `seg-….lex`), written
//! before the manifest names it and never changed afterwards, like the segment itself. It holds
//! one document per chunk (field `paragraph`: the chunk's text) and one per article (field
//! `article`: headline and body), each with the fast field `unit`, the chunk's or the article's
//! index in its segment. Only postings and positions are kept: the text lives in the segment.
//!
//! Scores are BM25 as Lucene computes it (tantivy's k1 1.2, b 0.75), with the statistics of the
//! whole store — document frequencies, document counts and average lengths summed over every
//! segment's index — so a score does not depend on how the store is cut into segments (one
//! commit, many commits or a Spark job give the same scores). Deleted articles stay in those
//! statistics until their segment is compacted, as in Lucene.
//!
//! The query syntax is the same in every search mode: `"a quoted phrase"` must occur, `-word`
//! (or `-"a phrase"`) must not, the rest is free text. Parsing never fails on a pasted passage:
//! an unbalanced quote, colons, brackets or URLs are text. Only straight double quotes (`"`)
//! make phrases: typeset quotation marks (“…”) come with pasted passages, not typed queries.

use rayon::prelude::*;
use std::path::{Path, PathBuf};
use tantivy::collector::Count;
use tantivy::query::{
    AllQuery, Bm25StatisticsProvider, BooleanQuery, EnableScoring, Occur, PhraseQuery, Query,
    TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer, Token, TokenFilter, TokenStream, Tokenizer,
};
use tantivy::{DocId, DocSet, Index, IndexReader, ReloadPolicy, Searcher, TantivyDocument, Term};

/// The name under which the analyzer is registered in every lexical index.
const ANALYZER: &str = "likewise-words";
const PARAGRAPH: &str = "paragraph";
const ARTICLE: &str = "article";
/// Fast fields: a chunk's index in its segment (paragraph documents only), an article's index
/// (article documents only). Which one a document has tells its kind.
const CHUNK_UNIT: &str = "chunk_unit";
const ARTICLE_UNIT: &str = "article_unit";
/// Words longer than this are no words (base64, long URLs): left out, as Lucene's analyzers do.
const MAX_WORD_BYTES: usize = 40;
/// Lucene's English stop words (its `EnglishAnalyzer`'s list, which tantivy uses too): short,
/// so quotations keep their words.
const ENGLISH_STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];
/// Free texts of this many words or fewer (a name, a piece of a quotation) also score as a
/// phrase; longer ones are passages, whose words rarely come in the same order.
const MAX_PROXIMITY_WORDS: usize = 8;
/// How far the words of a short free text may move and still count as its phrase.
const PROXIMITY_SLOP: u32 = 2;
/// Memory tantivy may use while indexing one segment (its minimum is 15 MB per thread).
const WRITER_BUDGET_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LexicalError {
    #[error("lexical index {path}: {message}")]
    Index { path: PathBuf, message: String },
    #[error("{0}")]
    Query(String),
}

fn index_err(path: &Path) -> impl Fn(tantivy::TantivyError) -> LexicalError + '_ {
    move |e| LexicalError::Index {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// How text becomes words. Recorded in the manifest by name: a store whose lexical indexes were
/// made with another analysis gets them rebuilt by its next `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Analysis {
    /// How far words are folded to a common form.
    pub stem: Stemming,
    /// Leave out English stop words ("the", "of"…) and the `s` of a possessive.
    pub stop_words: bool,
}

/// How words are folded before they are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stemming {
    /// Words as written (after case and accents are folded).
    None,
    /// English plurals to their singular ("sanctions", "crises"… "sanction"), and nothing else:
    /// the S-stemmer of Harman (1991), which Lucene ships as its `EnglishMinimalStemFilter`.
    Plurals,
    /// Snowball's English stemmer ("negotiations" and "negotiated" both "negoti").
    Snowball,
}

impl Analysis {
    /// Chosen on the BBC keyword queries (docs/benchmarks.md, "Hybrid search"): Snowball's
    /// stems cost names and quotations recall and MRR; plurals alone cost nothing there and
    /// still let "sanctions" find "sanction".
    pub const CHOSEN: Analysis = Analysis {
        stem: Stemming::Plurals,
        stop_words: true,
    };

    /// The name the manifest records.
    pub fn name(self) -> String {
        format!(
            "words-1{}{}",
            match self.stem {
                Stemming::None => "",
                Stemming::Plurals => "-plural",
                Stemming::Snowball => "-stem",
            },
            if self.stop_words { "-stop" } else { "" }
        )
    }

    /// Split on anything but letters and digits, lower-case, fold accents ("Erdoğan" =
    /// "Erdogan"), then optionally drop stop words and stem.
    pub fn analyzer(self) -> TextAnalyzer {
        let mut b = TextAnalyzer::builder(SimpleTokenizer::default())
            .dynamic()
            .filter_dynamic(RemoveLongFilter::limit(MAX_WORD_BYTES))
            .filter_dynamic(LowerCaser)
            .filter_dynamic(AsciiFoldingFilter);
        if self.stop_words {
            // The split leaves the `s` of "Blinken's" and the `t` of "don't" as words of
            // their own: they go with the stop words, so a possessive finds its name.
            let words = ENGLISH_STOP_WORDS.iter().chain(&["s", "t"]);
            b = b.filter_dynamic(StopWordFilter::remove(words.map(|w| w.to_string())));
        }
        match self.stem {
            Stemming::None => {}
            Stemming::Plurals => b = b.filter_dynamic(PluralFilter),
            Stemming::Snowball => b = b.filter_dynamic(Stemmer::new(Language::English)),
        }
        b.build()
    }

    /// A copy of this analysis's analyzer, built once per process: a query analyses its words
    /// and its hits' paragraphs several times, and building one (its stop words, its stemmer)
    /// costs more than using it.
    fn shared_analyzer(self) -> TextAnalyzer {
        static BUILT: std::sync::OnceLock<std::sync::Mutex<Vec<(Analysis, TextAnalyzer)>>> =
            std::sync::OnceLock::new();
        let mut built = BUILT
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((_, a)) = built.iter().find(|(a, _)| *a == self) {
            return a.clone();
        }
        let a = self.analyzer();
        built.push((self, a.clone()));
        a
    }

    /// The words of `text` as this analysis makes them, with their positions.
    pub fn words(self, text: &str) -> Vec<(usize, String)> {
        let mut analyzer = self.shared_analyzer();
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while let Some(t) = stream.next() {
            out.push((t.position, t.text.clone()));
        }
        out
    }
}

fn unit_column(unit: Unit) -> &'static str {
    match unit {
        Unit::Article => ARTICLE_UNIT,
        Unit::Paragraph => CHUNK_UNIT,
    }
}

/// The distinct words of `text`, as written there, whose analysed form is one of `words`
/// ("Blinken's" for the word `blinken`): what a page marks in a hit.
pub fn matched_words(analysis: Analysis, text: &str, words: &[String]) -> Vec<String> {
    let mut analyzer = analysis.shared_analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out: Vec<String> = Vec::new();
    while let Some(t) = stream.next() {
        if words.contains(&t.text) {
            if let Some(surface) = text.get(t.offset_from..t.offset_to) {
                if !out.iter().any(|w| w == surface) {
                    out.push(surface.to_string());
                }
            }
        }
    }
    out
}

/// The singular of an English plural by Harman's S-stemmer (lower-case ASCII words; others are
/// left alone): "-ies" → "-y" (not "-eies", "-aies"), "-es" → "-e" (not "-aes", "-ees",
/// "-oes"), "-s" → "" (not "-us", "-ss").
fn singular(word: &str) -> Option<usize> {
    let b = word.as_bytes();
    let n = b.len();
    if n < 4 || !word.is_ascii() {
        return None;
    }
    if word.ends_with("ies") && !word.ends_with("eies") && !word.ends_with("aies") {
        return Some(n - 2); // keep "i", to become "y"
    }
    if word.ends_with("es")
        && !(word.ends_with("aes") || word.ends_with("ees") || word.ends_with("oes"))
    {
        return Some(n - 1);
    }
    if b[n - 1] == b's' && b[n - 2] != b'u' && b[n - 2] != b's' {
        return Some(n - 1);
    }
    None
}

/// A tantivy token filter that folds plurals with [`singular`].
#[derive(Clone)]
pub struct PluralFilter;

impl TokenFilter for PluralFilter {
    type Tokenizer<T: Tokenizer> = PluralTokenizer<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> PluralTokenizer<T> {
        PluralTokenizer(tokenizer)
    }
}

#[derive(Clone)]
pub struct PluralTokenizer<T>(T);

impl<T: Tokenizer> Tokenizer for PluralTokenizer<T> {
    type TokenStream<'a> = PluralStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        PluralStream(self.0.token_stream(text))
    }
}

pub struct PluralStream<S>(S);

impl<S: TokenStream> TokenStream for PluralStream<S> {
    fn advance(&mut self) -> bool {
        if !self.0.advance() {
            return false;
        }
        let text = &mut self.0.token_mut().text;
        if let Some(keep) = singular(text) {
            let ies = text.ends_with("ies");
            text.truncate(keep);
            if ies {
                text.pop();
                text.push('y');
            }
        }
        true
    }

    fn token(&self) -> &Token {
        self.0.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.0.token_mut()
    }
}

fn schema() -> (Schema, Field, Field, Field, Field) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let paragraph = b.add_text_field(PARAGRAPH, text.clone());
    let article = b.add_text_field(ARTICLE, text);
    let chunk_unit = b.add_u64_field(CHUNK_UNIT, FAST);
    let article_unit = b.add_u64_field(ARTICLE_UNIT, FAST);
    (b.build(), paragraph, article, chunk_unit, article_unit)
}

/// One article as the lexical index sees it.
pub struct ArticleText<'a> {
    pub title: &'a str,
    /// Its chunks' texts, in order (a paragraph, or a window of a long one).
    pub chunks: Vec<&'a str>,
}

/// What [`build`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub bytes: u64,
}

/// Writes the lexical index of one segment as the folder `dir/name` (a temporary folder first,
/// synced, then renamed into place, then the parent synced): it appears whole or not at all.
/// Chunks are numbered in order over all articles, as in the segment.
pub fn build(
    dir: &Path,
    name: &str,
    analysis: Analysis,
    articles: &[ArticleText<'_>],
) -> Result<Built, LexicalError> {
    let target = dir.join(name);
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let io = |path: &Path, e: std::io::Error| LexicalError::Index {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let (schema, ..) = schema();
    let index = Index::create_in_dir(&tmp, schema).map_err(index_err(&tmp))?;
    fill(&index, analysis, articles).map_err(index_err(&tmp))?;
    drop(index);
    let mut bytes = 0;
    for entry in std::fs::read_dir(&tmp).map_err(|e| io(&tmp, e))? {
        let entry = entry.map_err(|e| io(&tmp, e))?;
        let path = entry.path();
        if path.is_file() {
            // tantivy syncs what it commits; its lock files and the like are synced here too.
            let f = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
            f.sync_all().map_err(|e| io(&path, e))?;
            bytes += f.metadata().map_err(|e| io(&path, e))?.len();
        }
    }
    sync_dir(&tmp).map_err(|e| io(&tmp, e))?;
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|e| io(&target, e))?;
    }
    std::fs::rename(&tmp, &target).map_err(|e| io(&target, e))?;
    sync_dir(dir).map_err(|e| io(dir, e))?;
    Ok(Built { bytes })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Adds every article and chunk of a segment to `index` and commits it as one tantivy segment.
fn fill(index: &Index, analysis: Analysis, articles: &[ArticleText<'_>]) -> tantivy::Result<()> {
    index.tokenizers().register(ANALYZER, analysis.analyzer());
    let (_, paragraph, article, chunk_unit, article_unit) = schema();
    let mut writer = index.writer_with_num_threads::<TantivyDocument>(1, WRITER_BUDGET_BYTES)?;
    let mut chunk = 0u64;
    for (a, art) in articles.iter().enumerate() {
        let mut doc = TantivyDocument::default();
        doc.add_u64(article_unit, a as u64);
        doc.add_text(article, art.title);
        for text in &art.chunks {
            doc.add_text(article, text);
            let mut p = TantivyDocument::default();
            p.add_u64(chunk_unit, chunk);
            p.add_text(paragraph, text);
            writer.add_document(p)?;
            chunk += 1;
        }
        writer.add_document(doc)?;
    }
    writer.commit()?;
    // One tantivy segment per store segment: fewer files, and one pass per query.
    let ids = index.searchable_segment_ids()?;
    if ids.len() > 1 {
        writer.merge(&ids).wait()?;
    }
    writer.wait_merging_threads()?;
    Ok(())
}

/// One segment's lexical index, opened for reading.
pub struct LexicalIndex {
    pub path: PathBuf,
    searcher: Searcher,
    _reader: IndexReader,
    paragraph: Field,
    article: Field,
    articles: u64,
    chunks: u64,
    /// Where each article's and each chunk's document is: (tantivy segment, doc).
    article_docs: Vec<(u32, DocId)>,
    chunk_docs: Vec<(u32, DocId)>,
}

impl LexicalIndex {
    /// Opens the index in `path` and checks it holds the `articles` and `chunks` of its segment.
    pub fn open(
        path: &Path,
        analysis: Analysis,
        articles: u64,
        chunks: u64,
    ) -> Result<LexicalIndex, LexicalError> {
        if !path.is_dir() {
            return Err(LexicalError::Index {
                path: path.to_path_buf(),
                message: "missing".into(),
            });
        }
        let index = Index::open_in_dir(path).map_err(index_err(path))?;
        index.tokenizers().register(ANALYZER, analysis.analyzer());
        let (expected, paragraph, article, ..) = schema();
        if index.schema() != expected {
            return Err(LexicalError::Index {
                path: path.to_path_buf(),
                message: "made by another version of likewise (its fields differ)".into(),
            });
        }
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(index_err(path))?;
        let searcher = reader.searcher();
        if searcher.num_docs() != articles + chunks {
            return Err(LexicalError::Index {
                path: path.to_path_buf(),
                message: format!(
                    "holds {} documents, not the segment's {articles} articles and {chunks} paragraphs",
                    searcher.num_docs()
                ),
            });
        }
        let mut article_docs = vec![(u32::MAX, 0); articles as usize];
        let mut chunk_docs = vec![(u32::MAX, 0); chunks as usize];
        for (ord, reader) in searcher.segment_readers().iter().enumerate() {
            for (column, docs) in [
                (ARTICLE_UNIT, &mut article_docs),
                (CHUNK_UNIT, &mut chunk_docs),
            ] {
                let units = reader.fast_fields().u64(column).map_err(index_err(path))?;
                for doc in 0..reader.max_doc() {
                    if let Some(u) = units.first(doc) {
                        if let Some(slot) = docs.get_mut(u as usize) {
                            *slot = (ord as u32, doc);
                        }
                    }
                }
            }
        }
        if article_docs
            .iter()
            .chain(&chunk_docs)
            .any(|d| d.0 == u32::MAX)
        {
            return Err(LexicalError::Index {
                path: path.to_path_buf(),
                message: "some articles or paragraphs of the segment have no document".into(),
            });
        }
        Ok(LexicalIndex {
            path: path.to_path_buf(),
            searcher,
            _reader: reader,
            paragraph,
            article,
            articles,
            chunks,
            article_docs,
            chunk_docs,
        })
    }

    /// Checks every file of the index against its checksum; the damaged ones, by name.
    pub fn verify(&self) -> Result<Vec<String>, LexicalError> {
        let damaged = self
            .searcher
            .index()
            .validate_checksum()
            .map_err(index_err(&self.path))?;
        let mut names: Vec<String> = damaged
            .iter()
            .map(|p| self.path.join(p).display().to_string())
            .collect();
        names.sort();
        // Every posting list read once: a damaged block that the footers do not cover shows here.
        let count = self
            .searcher
            .search(&AllQuery, &Count)
            .map_err(index_err(&self.path))?;
        if count as u64 != self.articles + self.chunks {
            names.push(format!("{} (document count)", self.path.display()));
        }
        Ok(names)
    }

    /// Bytes of the index's files.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(&self.path)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// A query in likewise's syntax, before analysis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuerySyntax {
    /// The free text (everything not a phrase or an exclusion), as typed.
    pub free: String,
    /// Phrases that must occur.
    pub phrases: Vec<String>,
    /// Words or phrases that must not occur.
    pub excluded: Vec<String>,
    /// The text a sentence encoder should see: the query without its exclusions.
    pub passage: String,
}

impl QuerySyntax {
    /// Whether the query asks for anything besides free text.
    pub fn has_conditions(&self) -> bool {
        !self.phrases.is_empty() || !self.excluded.is_empty()
    }
}

/// Reads a query leniently: `"…"` is a phrase (an unbalanced quote is text), `-word` (a letter
/// after the dash: `-5` is text) and
/// `-"…"` at the start of a word exclude, the rest is free text. Only an empty phrase (`""`)
/// is refused: it asks for nothing.
pub fn parse_query(query: &str) -> Result<QuerySyntax, LexicalError> {
    let mut out = QuerySyntax::default();
    let mut passage = String::with_capacity(query.len());
    let bytes = query.as_bytes();
    let mut i = 0;
    let at_word_start =
        |i: usize| i == 0 || bytes[i - 1].is_ascii_whitespace() || bytes[i - 1] == b'(';
    while i < bytes.len() {
        let c = bytes[i];
        let negated = c == b'-' && at_word_start(i) && i + 1 < bytes.len() && {
            let next = query[i + 1..].chars().next().unwrap_or(' ');
            next.is_alphabetic() || next == '"'
        };
        let quote_at = if negated { i + 1 } else { i };
        if bytes.get(quote_at) == Some(&b'"') && (negated || c == b'"') {
            if let Some(len) = query[quote_at + 1..].find('"') {
                let phrase = query[quote_at + 1..quote_at + 1 + len].trim();
                if phrase.is_empty() {
                    return Err(LexicalError::Query(
                        "the query has an empty phrase (\"\"): put words between the quotes, or leave them out".into(),
                    ));
                }
                if negated {
                    out.excluded.push(phrase.to_string());
                } else {
                    out.phrases.push(phrase.to_string());
                    passage.push_str(&query[i..quote_at + 2 + len]);
                }
                i = quote_at + 2 + len;
                continue;
            }
            // An unbalanced quote is text.
            if !negated {
                passage.push('"');
                out.free.push(' ');
                i += 1;
                continue;
            }
        }
        if negated {
            let rest = &query[i + 1..];
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.excluded.push(rest[..end].to_string());
            i += 1 + end;
            continue;
        }
        let ch = query[i..].chars().next().expect("a char at a boundary");
        out.free.push(ch);
        passage.push(ch);
        i += ch.len_utf8();
    }
    out.passage = passage.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.passage.is_empty() {
        out.passage = query.trim().to_string();
    }
    Ok(out)
}

/// Which documents a lexical search ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Articles: headline and body.
    Article,
    /// Chunks (paragraphs, or windows of long ones).
    Paragraph,
}

/// A parsed query analysed into words, ready to run on any segment.
pub struct LexicalQuery {
    analysis: Analysis,
    /// Distinct free words, in order of first appearance.
    words: Vec<String>,
    /// A short free text's words with their positions: documents that have them together, in
    /// order, score that phrase on top of the words (a name, a remembered piece of a quotation).
    proximity: Option<Vec<(usize, String)>>,
    phrases: Vec<Vec<(usize, String)>>,
    excluded: Vec<Vec<(usize, String)>>,
}

impl LexicalQuery {
    pub fn new(syntax: &QuerySyntax, analysis: Analysis) -> LexicalQuery {
        let mut words: Vec<String> = Vec::new();
        let free = analysis.words(&syntax.free);
        for (_, w) in &free {
            if !words.contains(w) {
                words.push(w.clone());
            }
        }
        let proximity = (syntax.phrases.is_empty()
            && (2..=MAX_PROXIMITY_WORDS).contains(&free.len()))
        .then(|| {
            let first = free[0].0;
            free.iter().map(|(p, w)| (p - first, w.clone())).collect()
        });
        let phrase = |p: &String| {
            let ws = analysis.words(p);
            let first = ws.first().map_or(0, |w| w.0);
            ws.into_iter()
                .map(|(pos, w)| (pos - first, w))
                .collect::<Vec<_>>()
        };
        LexicalQuery {
            analysis,
            words,
            proximity,
            phrases: syntax
                .phrases
                .iter()
                .map(phrase)
                .filter(|p| !p.is_empty())
                .collect(),
            excluded: syntax
                .excluded
                .iter()
                .map(phrase)
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// Whether anything scores: free words or phrases of at least one word after analysis.
    pub fn has_words(&self) -> bool {
        !self.words.is_empty() || !self.phrases.is_empty()
    }

    /// Whether some documents must be kept out: phrases to have, words not to have.
    pub fn has_conditions(&self) -> bool {
        !self.phrases.is_empty() || !self.excluded.is_empty()
    }

    /// The words a page should mark in a hit (stems, as the index has them).
    pub fn marked_words(&self) -> Vec<String> {
        let mut out = self.words.clone();
        for p in &self.phrases {
            for (_, w) in p {
                if !out.contains(w) {
                    out.push(w.clone());
                }
            }
        }
        out
    }

    pub fn analysis(&self) -> Analysis {
        self.analysis
    }

    fn clause(field: Field, words: &[(usize, String)]) -> Box<dyn Query> {
        if words.len() == 1 {
            Box::new(TermQuery::new(
                Term::from_field_text(field, &words[0].1),
                IndexRecordOption::WithFreqs,
            ))
        } else {
            Box::new(PhraseQuery::new_with_offset(
                words
                    .iter()
                    .map(|(pos, w)| (*pos, Term::from_field_text(field, w)))
                    .collect(),
            ))
        }
    }

    /// The tantivy query on `field`: free words should match (BM25), phrases must, excluded
    /// words must not. `scored` false: only the conditions (every document that passes them).
    fn on(&self, field: Field, scored: bool) -> Box<dyn Query> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if scored {
            if let Some(words) = &self.proximity {
                clauses.push((
                    Occur::Should,
                    Box::new(PhraseQuery::new_with_offset_and_slop(
                        words
                            .iter()
                            .map(|(pos, w)| (*pos, Term::from_field_text(field, w)))
                            .collect(),
                        PROXIMITY_SLOP,
                    )),
                ));
            }
            for w in &self.words {
                clauses.push((
                    Occur::Should,
                    Box::new(TermQuery::new(
                        Term::from_field_text(field, w),
                        IndexRecordOption::WithFreqs,
                    )),
                ));
            }
        }
        for p in &self.phrases {
            clauses.push((Occur::Must, Self::clause(field, p)));
        }
        if !scored && self.phrases.is_empty() {
            clauses.push((Occur::Must, Box::new(AllQuery)));
        }
        for p in &self.excluded {
            clauses.push((Occur::MustNot, Self::clause(field, p)));
        }
        Box::new(BooleanQuery::new(clauses))
    }
}

/// BM25 statistics of a whole store: every segment's index summed, counting the documents of
/// one unit only (articles and chunks share an index but not their statistics).
struct StoreStatistics<'a> {
    indexes: &'a [&'a LexicalIndex],
    unit: Unit,
}

impl StoreStatistics<'_> {
    fn field(&self, ix: &LexicalIndex) -> Field {
        match self.unit {
            Unit::Article => ix.article,
            Unit::Paragraph => ix.paragraph,
        }
    }
}

impl Bm25StatisticsProvider for StoreStatistics<'_> {
    fn total_num_tokens(&self, _field: Field) -> tantivy::Result<u64> {
        let mut total = 0;
        for ix in self.indexes {
            for reader in ix.searcher.segment_readers() {
                total += reader.inverted_index(self.field(ix))?.total_num_tokens();
            }
        }
        Ok(total)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self
            .indexes
            .iter()
            .map(|ix| match self.unit {
                Unit::Article => ix.articles,
                Unit::Paragraph => ix.chunks,
            })
            .sum())
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let mut total = 0;
        for ix in self.indexes {
            let term = Term::from_field_text(self.field(ix), term.value().as_str().unwrap_or(""));
            total += ix.searcher.doc_freq(&term)?;
        }
        Ok(total)
    }
}

/// A document a lexical search found: which index (by position in the slice searched), which
/// unit (article or chunk index in its segment), its BM25 score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LexicalHit {
    pub index: usize,
    pub unit: u32,
    pub score: f32,
}

/// Runs `query` over every index, scoring `unit`s with the store's statistics. `keep(index,
/// unit)` is asked before a document counts (deleted articles, metadata filters). Calls
/// `found` for every document that matches the free words or phrases and passes the
/// conditions. Every match is scored: the reference the pruned [`top_k`] and the seeking
/// [`scores_of`] are tested against.
#[cfg(test)]
fn search_all(
    indexes: &[&LexicalIndex],
    query: &LexicalQuery,
    unit: Unit,
    keep: &(dyn Fn(usize, u32) -> bool + Sync),
    found: &mut dyn FnMut(LexicalHit),
) -> Result<(), LexicalError> {
    if indexes.is_empty() || !query.has_words() {
        return Ok(());
    }
    let stats = StoreStatistics { indexes, unit };
    for (i, ix) in indexes.iter().enumerate() {
        let weight = scored_weight(&stats, ix, query)?;
        for reader in ix.searcher.segment_readers() {
            let units = unit_numbers(reader, unit, &ix.path)?;
            let mut err = None;
            weight
                .for_each(reader, &mut |doc: DocId, score| match units.first(doc) {
                    Some(u) => {
                        let u = u as u32;
                        if keep(i, u) {
                            found(LexicalHit {
                                index: i,
                                unit: u,
                                score,
                            });
                        }
                    }
                    None => err = Some(doc),
                })
                .map_err(index_err(&ix.path))?;
            if let Some(doc) = err {
                return Err(LexicalError::Index {
                    path: ix.path.clone(),
                    message: format!("document {doc} has no unit"),
                });
            }
        }
    }
    Ok(())
}

/// The `k` best documents of `unit` for `query`, best first; ties go to the earlier index and
/// unit. Documents that cannot enter the `k` best are skipped unscored (tantivy's block-max
/// WAND), so the cost grows with the postings of the rarer words, not of every word.
pub fn top_k(
    indexes: &[&LexicalIndex],
    query: &LexicalQuery,
    unit: Unit,
    k: usize,
    keep: &(dyn Fn(usize, u32) -> bool + Sync),
) -> Result<Vec<LexicalHit>, LexicalError> {
    if indexes.is_empty() || !query.has_words() || k == 0 {
        return Ok(Vec::new());
    }
    let stats = StoreStatistics { indexes, unit };
    // Each segment's index on a thread of its own, each keeping its k best; then the best k.
    let per_index: Vec<Result<Vec<LexicalHit>, LexicalError>> = indexes
        .par_iter()
        .enumerate()
        .map(|(i, ix)| top_k_of(&stats, i, ix, query, unit, k, keep))
        .collect();
    let mut out = Vec::new();
    for hits in per_index {
        out.extend(hits?);
    }
    sort_hits(&mut out);
    out.truncate(k);
    Ok(out)
}

/// [`top_k`] on one segment's index (number `i`).
fn top_k_of(
    stats: &StoreStatistics,
    i: usize,
    ix: &LexicalIndex,
    query: &LexicalQuery,
    unit: Unit,
    k: usize,
    keep: &(dyn Fn(usize, u32) -> bool + Sync),
) -> Result<Vec<LexicalHit>, LexicalError> {
    // The k best so far, worst on top.
    let mut best: std::collections::BinaryHeap<Ranked> = std::collections::BinaryHeap::new();
    let weight = scored_weight(stats, ix, query)?;
    // Pruning skips documents scoring at most the threshold: it is lowered a hair so that a
    // document tying the k-th is still seen, and ties are settled by storage order.
    let below = |t: f32| t - t.abs() * 1e-6 - 1e-9;
    for reader in ix.searcher.segment_readers() {
        let units = unit_numbers(reader, unit, &ix.path)?;
        let threshold = match best.peek() {
            Some(worst) if best.len() == k => below(worst.0.score),
            _ => f32::MIN,
        };
        weight
            .for_each_pruning(threshold, reader, &mut |doc: DocId, score| {
                if let Some(u) = units.first(doc) {
                    let u = u as u32;
                    if keep(i, u) {
                        best.push(Ranked(LexicalHit {
                            index: i,
                            unit: u,
                            score,
                        }));
                        if best.len() > k {
                            best.pop();
                        }
                    }
                }
                match best.peek() {
                    Some(worst) if best.len() == k => below(worst.0.score),
                    _ => f32::MIN,
                }
            })
            .map_err(index_err(&ix.path))?;
    }
    Ok(best.into_iter().map(|r| r.0).collect())
}

/// The scoring weight of `query` on `ix`, with the store's statistics.
fn scored_weight(
    stats: &StoreStatistics,
    ix: &LexicalIndex,
    query: &LexicalQuery,
) -> Result<Box<dyn tantivy::query::Weight>, LexicalError> {
    query
        .on(stats.field(ix), true)
        .weight(EnableScoring::enabled_from_statistics_provider(
            stats,
            &ix.searcher,
        ))
        .map_err(index_err(&ix.path))
}

/// Each document's article or chunk number in its segment (`unit` says which).
fn unit_numbers(
    reader: &tantivy::SegmentReader,
    unit: Unit,
    path: &Path,
) -> Result<tantivy::columnar::Column<u64>, LexicalError> {
    reader
        .fast_fields()
        .u64(unit_column(unit))
        .map_err(index_err(path))
}

/// A hit ordered so that the heap's top is the worst: lowest score, then latest in storage.
struct Ranked(LexicalHit);

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // "Greater" = worse, so the max-heap's top is the one to drop.
        other
            .0
            .score
            .total_cmp(&self.0.score)
            .then(self.0.index.cmp(&other.0.index))
            .then(self.0.unit.cmp(&other.0.unit))
    }
}

/// The BM25 score of each of `wanted` (index, unit) — 0 for a document no free word or phrase
/// matches, or that fails the query's conditions — found by seeking each document's place in
/// the postings, not by scoring every match.
pub fn scores_of(
    indexes: &[&LexicalIndex],
    query: &LexicalQuery,
    unit: Unit,
    wanted: &[(usize, u32)],
) -> Result<Vec<f32>, LexicalError> {
    let mut out = vec![0f32; wanted.len()];
    if indexes.is_empty() || !query.has_words() {
        return Ok(out);
    }
    let stats = StoreStatistics { indexes, unit };
    for (i, ix) in indexes.iter().enumerate() {
        let docs = match unit {
            Unit::Article => &ix.article_docs,
            Unit::Paragraph => &ix.chunk_docs,
        };
        // (tantivy segment, doc, position in `wanted`), in the postings' order.
        let mut here: Vec<(u32, DocId, usize)> = wanted
            .iter()
            .enumerate()
            .filter(|(_, w)| w.0 == i)
            .filter_map(|(n, w)| docs.get(w.1 as usize).map(|&(seg, doc)| (seg, doc, n)))
            .collect();
        if here.is_empty() {
            continue;
        }
        here.sort_unstable();
        let weight = scored_weight(&stats, ix, query)?;
        for (ord, reader) in ix.searcher.segment_readers().iter().enumerate() {
            let mut scorer = weight.scorer(reader, 1.0).map_err(index_err(&ix.path))?;
            for &(_, doc, n) in here.iter().filter(|h| h.0 == ord as u32) {
                if scorer.doc() == tantivy::TERMINATED {
                    break;
                }
                if scorer.doc() < doc {
                    scorer.seek(doc);
                }
                if scorer.doc() == doc {
                    out[n] = scorer.score();
                }
            }
        }
    }
    Ok(out)
}

/// Best first; ties by index, then unit (storage order), so results are deterministic.
pub fn sort_hits(hits: &mut [LexicalHit]) {
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.index.cmp(&b.index))
            .then(a.unit.cmp(&b.unit))
    });
}

/// Every document of `unit` that passes the query's conditions (has its phrases, lacks its
/// excluded words), per index: `passes[index][unit]`.
pub fn conditions(
    indexes: &[&LexicalIndex],
    query: &LexicalQuery,
    unit: Unit,
) -> Result<Vec<Vec<bool>>, LexicalError> {
    let mut out = Vec::with_capacity(indexes.len());
    for ix in indexes {
        let (field, n) = match unit {
            Unit::Article => (ix.article, ix.articles),
            Unit::Paragraph => (ix.paragraph, ix.chunks),
        };
        let mut passes = vec![false; n as usize];
        let q = query.on(field, false);
        let weight = q
            .weight(EnableScoring::disabled_from_searcher(&ix.searcher))
            .map_err(index_err(&ix.path))?;
        for reader in ix.searcher.segment_readers() {
            // Every document of the other kind lacks this column, and is passed over.
            let units = unit_numbers(reader, unit, &ix.path)?;
            weight
                .for_each_no_score(reader, &mut |docs: &[DocId]| {
                    for &doc in docs {
                        if let Some(u) = units.first(doc) {
                            if let Some(p) = passes.get_mut(u as usize) {
                                *p = true;
                            }
                        }
                    }
                })
                .map_err(index_err(&ix.path))?;
        }
        out.push(passes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        Analysis::CHOSEN
            .words(text)
            .into_iter()
            .map(|w| w.1)
            .collect()
    }

    #[test]
    fn analysis_folds_case_accents_possessives_and_plurals() {
        assert_eq!(words("Blinken's"), words("blinken"));
        assert_eq!(words("Blinken’s"), words("Blinken"));
        assert_eq!(words("ERDOĞAN"), words("erdogan"));
        assert_eq!(words("sanctions"), words("sanction"));
        assert_eq!(words("the Rafah crossing"), words("Rafah crossing"));
        assert!(words("the of and").is_empty());
        assert_eq!(words("Müller, Zürich"), vec!["muller", "zurich"]);
        assert_eq!(words("crises"), words("crise"));
        assert_eq!(words("countries"), vec!["country"]);
        assert_eq!(words("bus glass status"), vec!["bus", "glass", "status"]);
    }

    #[test]
    fn queries_parse_leniently() {
        let q = parse_query(r#"Rafah "hypocritical spectacle" -Shoukry"#).unwrap();
        assert_eq!(q.phrases, vec!["hypocritical spectacle"]);
        assert_eq!(q.excluded, vec!["Shoukry"]);
        assert_eq!(q.free.split_whitespace().collect::<Vec<_>>(), vec!["Rafah"]);
        assert_eq!(q.passage, r#"Rafah "hypocritical spectacle""#);
        // Unbalanced quotes, colons, brackets, URLs and non-Latin text are text.
        for text in [
            r#"He said "we will not"#,
            "title: (Gaza) [aid] {x} https://example.org/a?b=c&d AND OR NOT",
            "Нетаньяху заявил 以色列",
            "well-known cease-fire - and -5 degrees",
            "\"",
            "-",
        ] {
            let q = parse_query(text).unwrap();
            assert!(
                q.phrases.is_empty() && q.excluded.is_empty(),
                "{text}: {q:?}"
            );
        }
        let q = parse_query("-\"West Bank\" Gaza").unwrap();
        assert_eq!(q.excluded, vec!["West Bank"]);
        assert!(parse_query("a \"\" b").is_err());
        assert!(parse_query("\"  \"").is_err());
    }

    #[test]
    fn plain_passages_are_embedded_unchanged() {
        let text = "Egypt's foreign minister   said the crossing at Rafah was open.";
        assert_eq!(
            parse_query(text).unwrap().passage,
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }

    fn build_store(dir: &Path, parts: &[&[(&str, &[&str])]]) -> Vec<LexicalIndex> {
        parts
            .iter()
            .enumerate()
            .map(|(i, arts)| {
                let texts: Vec<ArticleText> = arts
                    .iter()
                    .map(|(t, c)| ArticleText {
                        title: t,
                        chunks: c.to_vec(),
                    })
                    .collect();
                let name = format!("seg-{i}.lex");
                build(dir, &name, Analysis::CHOSEN, &texts).unwrap();
                let chunks = texts.iter().map(|t| t.chunks.len() as u64).sum();
                LexicalIndex::open(
                    &dir.join(&name),
                    Analysis::CHOSEN,
                    texts.len() as u64,
                    chunks,
                )
                .unwrap()
            })
            .collect()
    }

    const ARTICLES: &[(&str, &[&str])] = &[
        (
            "Aid at Rafah",
            &["Trucks crossed at Rafah.", "Shoukry spoke in Cairo."],
        ),
        (
            "Herzog visits",
            &[
                "Isaac Herzog met families.",
                "A hypocritical spectacle, he said.",
            ],
        ),
        ("Markets", &["Shares fell in London.", "The pound rose."]),
        (
            "Rafah again",
            &["Rafah saw more trucks today.", "Aid groups asked for more."],
        ),
    ];

    #[test]
    fn scores_do_not_depend_on_how_the_store_is_cut() {
        let one = tempfile::tempdir().unwrap();
        let many = tempfile::tempdir().unwrap();
        let whole = build_store(one.path(), &[ARTICLES]);
        let cut = build_store(
            many.path(),
            &[&ARTICLES[..1], &ARTICLES[1..3], &ARTICLES[3..]],
        );
        let q = LexicalQuery::new(&parse_query("Rafah trucks aid").unwrap(), Analysis::CHOSEN);
        for unit in [Unit::Article, Unit::Paragraph] {
            let a = top_k(&whole.iter().collect::<Vec<_>>(), &q, unit, 10, &|_, _| {
                true
            })
            .unwrap();
            let b = top_k(&cut.iter().collect::<Vec<_>>(), &q, unit, 10, &|_, _| true).unwrap();
            assert!(!a.is_empty());
            let sa: Vec<f32> = a.iter().map(|h| h.score).collect();
            let sb: Vec<f32> = b.iter().map(|h| h.score).collect();
            assert_eq!(sa.len(), sb.len());
            for (x, y) in sa.iter().zip(&sb) {
                assert!(
                    (x - y).abs() <= 1e-6 * x.abs().max(1.0),
                    "{unit:?}: {sa:?} vs {sb:?}"
                );
            }
        }
    }

    #[test]
    fn pruned_top_k_and_seeked_scores_agree_with_scoring_every_match() {
        let dir = tempfile::tempdir().unwrap();
        let ix = build_store(dir.path(), &[&ARTICLES[..2], &ARTICLES[2..]]);
        let ixs: Vec<&LexicalIndex> = ix.iter().collect();
        for text in [
            "Rafah trucks aid",
            "Rafah -Shoukry",
            "\"more trucks\" Rafah",
            "pound",
        ] {
            let q = LexicalQuery::new(&parse_query(text).unwrap(), Analysis::CHOSEN);
            for unit in [Unit::Article, Unit::Paragraph] {
                let mut all = Vec::new();
                search_all(&ixs, &q, unit, &|_, _| true, &mut |h| all.push(h)).unwrap();
                sort_hits(&mut all);
                for k in [1, 2, 100] {
                    let top = top_k(&ixs, &q, unit, k, &|_, _| true).unwrap();
                    assert_eq!(
                        top,
                        all.iter().take(k).copied().collect::<Vec<_>>(),
                        "{text} {unit:?} {k}"
                    );
                }
                let wanted: Vec<(usize, u32)> = (0..2)
                    .flat_map(|i| (0..3u32).map(move |u| (i, u)))
                    .collect();
                let scores = scores_of(&ixs, &q, unit, &wanted).unwrap();
                for (w, s) in wanted.iter().zip(&scores) {
                    let expected = all
                        .iter()
                        .find(|h| (h.index, h.unit) == *w)
                        .map_or(0.0, |h| h.score);
                    assert_eq!(*s, expected, "{text} {unit:?} {w:?}");
                }
            }
        }
    }

    #[test]
    fn phrases_must_occur_and_exclusions_must_not() {
        let dir = tempfile::tempdir().unwrap();
        let ix = build_store(dir.path(), &[ARTICLES]);
        let ixs: Vec<&LexicalIndex> = ix.iter().collect();
        let run = |text: &str, unit| {
            let q = LexicalQuery::new(&parse_query(text).unwrap(), Analysis::CHOSEN);
            top_k(&ixs, &q, unit, 10, &|_, _| true)
                .unwrap()
                .iter()
                .map(|h| h.unit)
                .collect::<Vec<_>>()
        };
        assert_eq!(run("\"hypocritical spectacle\"", Unit::Article), vec![1]);
        assert_eq!(
            run("\"spectacle hypocritical\"", Unit::Article),
            Vec::<u32>::new()
        );
        let mut r = run("Rafah -Shoukry", Unit::Article);
        r.sort();
        assert_eq!(r, vec![3]);
        assert_eq!(run("Herzog's", Unit::Paragraph), vec![2]);
        let q = LexicalQuery::new(&parse_query("Rafah -Shoukry").unwrap(), Analysis::CHOSEN);
        let passes = conditions(&ixs, &q, Unit::Article).unwrap();
        assert_eq!(passes[0], vec![false, true, true, true]);
        let passes = conditions(&ixs, &q, Unit::Paragraph).unwrap();
        assert_eq!(
            passes[0],
            vec![true, false, true, true, true, true, true, true]
        );
    }

    #[test]
    fn a_damaged_index_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        build_store(dir.path(), &[ARTICLES]);
        let path = dir.path().join("seg-0.lex");
        assert!(LexicalIndex::open(&path, Analysis::CHOSEN, 3, 8).is_err());
        std::fs::remove_file(path.join("meta.json")).unwrap();
        let e = LexicalIndex::open(&path, Analysis::CHOSEN, 4, 8)
            .err()
            .unwrap();
        assert!(e.to_string().contains("seg-0.lex"), "{e}");
    }
}
