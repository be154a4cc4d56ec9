//! From raw article text to a headline, paragraphs and metadata.
//!
//! Text files follow one shape: the first non-empty line is the headline, every further non-empty
//! line a paragraph; a front matter block on top (Jekyll's and Hugo's `---` / `+++`) gives the
//! headline and metadata instead. Scraped pages carry page furniture after the story — "Similar Readings (5
//! items)" with a list of related headlines, a "Summary", "Statistics", "Read Count", and
//! `Key: value` lines such as "URL:" and "Date:". That tail is metadata, not paragraphs: URL, date and
//! source become the article's metadata, the rest is kept in `extra` and never embedded. A bare
//! agency credit closing the story ("Reuters") becomes the article's credit.
//!
//! Invariants: paragraphs are whitespace-normalised, non-empty, and unique within an article (a
//! block repeated verbatim by a scraper is kept once); nothing of the story itself is dropped. A
//! text with a headline and no story below it (a one-line file, a JSONL record whose `text` is one
//! line) has its headline as its one paragraph too, so paragraph search, `compare` and the
//! paragraph tier of `dupes` see it like any other article.

use std::collections::BTreeMap;

/// An article's parsed content, before embedding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedArticle {
    pub title: String,
    pub paragraphs: Vec<String>,
    pub meta: Metadata,
}

/// Metadata of an article; every field optional.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metadata {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub credit: Option<String>,
    /// Other `Key: value` lines of the page furniture, and its summary.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub extra: BTreeMap<String, String>,
}

/// Collapses runs of whitespace to one space and trims.
pub fn normalize_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses a text or Markdown article: headline, paragraphs, furniture and metadata. A front
/// matter block (see [`split_front_matter`]) gives the headline and metadata it names.
pub fn parse_article_text(text: &str) -> ParsedArticle {
    let (front, text) = split_front_matter(text);
    let lines: Vec<String> = text
        .lines()
        .map(normalize_whitespace)
        .filter(|l| !l.is_empty())
        .collect();
    let given_title = front.get("title").map(|t| normalize_whitespace(t));
    let mut parsed = match (&given_title, lines.split_first()) {
        (_, None) => with_headline(
            given_title.as_deref().unwrap_or(""),
            ParsedArticle::default(),
        ),
        (Some(title), Some((first, body))) => {
            // A Markdown heading that repeats the front matter's title is that title again.
            let heading = markdown_heading(first).unwrap_or(first);
            let body = if heading.eq_ignore_ascii_case(title) {
                body
            } else {
                &lines[..]
            };
            with_headline(title, parse_body(body.iter().map(String::as_str)))
        }
        (None, Some((first, body))) => with_headline(
            first.trim_start_matches('#').trim(),
            parse_body(body.iter().map(String::as_str)),
        ),
    };
    front_matter_into(front, &mut parsed.meta);
    parsed
}

/// A Markdown heading's text (`## Background` → `Background`), if the line is one.
fn markdown_heading(line: &str) -> Option<&str> {
    let text = line.trim_start_matches('#');
    let level = line.len() - text.len();
    ((1..=6).contains(&level) && text.starts_with(' ')).then(|| text.trim())
}

/// Splits a front matter block off the top of a text: the fields of a `---` … `---` (YAML, as
/// Jekyll and Hugo write it; `...` also closes it) or `+++` … `+++` (TOML) block, and the text
/// after it. Only one-line `key: value` / `key = value` fields are read (quotes removed; lists
/// and nested tables are left out); keys are lower-cased. A text has no front matter when its
/// first line is not a delimiter, when the block is not closed within 100 lines, or when a line
/// of it is not `key: value` with a one-word key or none of its keys is one of [`FRONT_KEYS`]
/// (a story whose first lines are set off by rules).
pub fn split_front_matter(text: &str) -> (BTreeMap<String, String>, &str) {
    let mut fields = BTreeMap::new();
    let text_start = text.trim_start_matches('\u{FEFF}');
    let mut lines = text_start.split_inclusive('\n');
    let Some(first) = lines.next() else {
        return (fields, text);
    };
    let (separator, closers): (char, &[&str]) = match first.trim_end() {
        "---" => (':', &["---", "..."]),
        "+++" => ('=', &["+++"]),
        _ => return (fields, text),
    };
    let mut at = first.len();
    let mut known = false;
    for line in lines.take(100) {
        at += line.len();
        let line = line.trim_end();
        if closers.contains(&line) {
            // A story that opens with a rule is not front matter: the block must name one of
            // the fields front matter has.
            let kept = if known { fields } else { BTreeMap::new() };
            return (kept, if known { &text_start[at..] } else { text });
        }
        // Indented lines belong to a list or table of the field above: not a field.
        if line.trim().is_empty() || line.starts_with([' ', '\t', '-', '#', '[']) {
            continue;
        }
        let Some((key, value)) = line.split_once(separator) else {
            return (BTreeMap::new(), text);
        };
        let key = key.trim().to_lowercase();
        // A key is one word (`title`, `publish_date`, `og-title`); "Breaking news: …" is text.
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return (BTreeMap::new(), text);
        }
        known |= FRONT_KEYS.contains(&key.as_str());
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        if !value.is_empty() && !value.starts_with(['[', '{', '|', '>']) {
            fields.insert(key, normalize_whitespace(value));
        }
    }
    (BTreeMap::new(), text)
}

/// Fields of which a front matter block must name one (Jekyll's, Hugo's and the usual news
/// export's).
const FRONT_KEYS: &[&str] = &[
    "title",
    "date",
    "published",
    "publishdate",
    "pubdate",
    "source",
    "publisher",
    "url",
    "link",
    "canonical",
    "permalink",
    "author",
    "authors",
    "tags",
    "categories",
    "category",
    "layout",
    "slug",
    "description",
    "summary",
    "draft",
    "lang",
    "language",
    "id",
];

/// Keys of front matter fields read as an article's date, source and address.
const FRONT_DATE: &[&str] = &["date", "published", "publishdate", "pubdate"];
const FRONT_SOURCE: &[&str] = &["source", "publisher", "outlet", "site"];
const FRONT_URL: &[&str] = &["url", "link", "canonical", "canonicalurl", "permalink"];

/// Front matter fields into an article's metadata: its date, source and address stand over what
/// the body's own lines gave (they were written for the purpose); every other field but the
/// title is kept in `extra`.
fn front_matter_into(front: BTreeMap<String, String>, meta: &mut Metadata) {
    let pick = |keys: &[&str]| keys.iter().find_map(|k| front.get(*k).cloned());
    if let Some(date) = pick(FRONT_DATE) {
        meta.date = Some(normalize_date(&date));
    }
    if let Some(url) = pick(FRONT_URL) {
        meta.url = Some(url);
    }
    if let Some(source) = pick(FRONT_SOURCE) {
        meta.source = Some(source);
    } else if meta.source.is_none() {
        meta.source = meta.url.as_deref().and_then(url_host);
    }
    let read: Vec<&str> = [FRONT_DATE, FRONT_SOURCE, FRONT_URL, &["title"]].concat();
    for (key, value) in front {
        if !read.contains(&key.as_str()) {
            meta.extra.entry(key).or_insert(value);
        }
    }
}

/// Parses an article whose headline comes apart from its body (a JSONL or Parquet `title` field).
pub fn parse_titled(title: &str, body: &str) -> ParsedArticle {
    with_headline(&normalize_whitespace(title), parse_body(body.lines()))
}

/// Sets the headline; a story with no paragraph of its own gets the headline as its paragraph,
/// since the headline is then all of its text.
fn with_headline(title: &str, mut parsed: ParsedArticle) -> ParsedArticle {
    parsed.title = title.to_string();
    if parsed.paragraphs.is_empty() && !title.is_empty() {
        parsed.paragraphs.push(parsed.title.clone());
    }
    parsed
}

/// Parses a body given as separate lines (JSONL articles whose title comes in its own field).
fn parse_body<'a>(lines: impl Iterator<Item = &'a str>) -> ParsedArticle {
    // A Markdown heading inside the story ("## Background") is kept as its words.
    let body: Vec<String> = lines
        .map(normalize_whitespace)
        .map(|l| markdown_heading(&l).map_or_else(|| l.clone(), str::to_string))
        .filter(|l| !l.is_empty())
        .collect();
    let mut meta = Metadata::default();
    let end = furniture_start(&body);
    read_furniture(&body[end..], &mut meta);
    let mut story = &body[..end];
    if let Some((last, rest)) = story.split_last() {
        if !rest.is_empty() && is_credit_line(last) {
            meta.credit = Some(
                last.trim_matches(|c: char| {
                    c == '(' || c == ')' || c == '-' || c == '—' || c == ' '
                })
                .to_string(),
            );
            story = rest;
        }
    }
    if meta.source.is_none() {
        meta.source = meta
            .credit
            .clone()
            .or_else(|| meta.url.as_deref().and_then(url_host));
    }
    let mut seen = std::collections::HashSet::new();
    let paragraphs = story
        .iter()
        .filter(|p| seen.insert(p.to_lowercase()))
        .cloned()
        .collect();
    ParsedArticle {
        title: String::new(),
        paragraphs,
        meta,
    }
}

/// Lines that open a block of links or page furniture; everything after them is furniture.
const FURNITURE_MARKERS: &[&str] = &[
    "similar readings",
    "related articles",
    "related stories",
    "related readings",
    "related coverage",
    "related content",
    "related news",
    "related links",
    "related topics",
    "more on this story",
    "more from",
    "read more",
    "you may also like",
    "recommended for you",
    "most read",
    "most popular",
    "share this article",
];

/// Labels of the furniture that stand alone on their line.
const FURNITURE_LABELS: &[&str] = &[
    "summary",
    "statistics",
    "details",
    "tags",
    "share",
    "advertisement",
    "comments",
];

/// Keys of `Key: value` metadata lines.
const METADATA_KEYS: &[&str] = &[
    "url",
    "link",
    "date",
    "published",
    "updated",
    "created",
    "last read",
    "id",
    "category id",
    "category",
    "source",
    "author",
    "byline",
    "tags",
    "words",
    "read count",
];

fn is_marker(line: &str) -> bool {
    let lower = line.to_lowercase();
    let words = line.split_whitespace().count();
    words <= 8
        && (FURNITURE_MARKERS.iter().any(|m| {
            lower.starts_with(m)
                && lower[m.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !c.is_alphanumeric())
        }) || (lower.ends_with("items)") && lower.contains('(')))
}

fn metadata_pair(line: &str) -> Option<(String, String)> {
    let (key, value) = line.split_once(':')?;
    let key_lower = key.trim().to_lowercase();
    METADATA_KEYS
        .contains(&key_lower.as_str())
        .then(|| (key_lower, value.trim().to_string()))
}

/// Whether a line can only be page furniture when it stands among the last lines of a page:
/// a label, a bare number, a `Key: value` pair, or a counter such as "Words1" or "Read CountDetails".
fn is_tail_line(line: &str) -> bool {
    let lower = line.to_lowercase();
    metadata_pair(line).is_some()
        || FURNITURE_LABELS.contains(&lower.as_str())
        || line
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == '.')
        || ((lower.starts_with("words") || lower.starts_with("read count"))
            && line.split_whitespace().count() <= 2)
}

/// Index of the first line of furniture in `body` (its length when there is none).
fn furniture_start(body: &[String]) -> usize {
    // A marker opens furniture, but never as the very first body line (that would be a story).
    let marker = body
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, l)| is_marker(l))
        .map(|(i, _)| i)
        .unwrap_or(body.len());
    // A tail of metadata lines, read from the end; a "Summary" label takes its text with it.
    let mut tail = body.len();
    while tail > 0 {
        let line = &body[tail - 1];
        if is_tail_line(line) {
            tail -= 1;
        } else if tail >= 2 && body[tail - 2].eq_ignore_ascii_case("summary") {
            tail -= 2;
        } else {
            break;
        }
    }
    // A tail made of a lone number or label is too weak a sign by itself.
    let tail_has_metadata = body[tail..].iter().any(|l| metadata_pair(l).is_some());
    let tail = if tail_has_metadata { tail } else { body.len() };
    marker
        .min(tail)
        .max(if body.len() > 1 { 1 } else { body.len() })
}

fn read_furniture(furniture: &[String], meta: &mut Metadata) {
    let mut i = 0;
    while i < furniture.len() {
        let line = &furniture[i];
        if line.eq_ignore_ascii_case("summary") {
            if let Some(next) = furniture.get(i + 1) {
                if !is_tail_line(next) {
                    meta.extra.insert("summary".into(), next.clone());
                    i += 2;
                    continue;
                }
            }
        }
        if let Some((key, value)) = metadata_pair(line) {
            match key.as_str() {
                "url" | "link" if meta.url.is_none() => meta.url = Some(value),
                "date" | "published" => meta.date = Some(normalize_date(&value)),
                "source" => meta.source = Some(value),
                _ => {
                    meta.extra.insert(key, value);
                }
            }
        }
        i += 1;
    }
    if meta.date.is_none() {
        if let Some(created) = meta.extra.get("created") {
            meta.date = Some(normalize_date(created));
        }
    }
}

/// News agencies whose bare name may close a story as its credit.
const AGENCIES: &[&str] = &[
    "reuters",
    "ap",
    "afp",
    "associated press",
    "agence france-presse",
    "bloomberg",
    "dpa",
    "xinhua",
    "kyodo",
    "yonhap",
    "pti",
    "ani",
    "ians",
    "efe",
    "ansa",
    "tass",
    "upi",
    "agencies",
    "with agencies",
];

fn is_credit_line(line: &str) -> bool {
    let core = line
        .trim_matches(|c: char| {
            c == '(' || c == ')' || c == '-' || c == '—' || c == '–' || c == ' '
        })
        .to_lowercase();
    if AGENCIES.contains(&core.as_str()) {
        return true;
    }
    let lower = line.to_lowercase();
    let by_line = [
        "reporting by",
        "additional reporting by",
        "(reporting by",
        "editing by",
        "writing by",
    ];
    by_line.iter().any(|p| lower.starts_with(p)) && line.split_whitespace().count() <= 20
}

fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let host = rest.split(['/', '?', '#']).next()?.trim();
    (!host.is_empty()).then(|| host.trim_start_matches("www.").to_string())
}

/// Turns common date spellings into `YYYY-MM-DD` (kept as given when not recognised), so dates
/// compare as strings.
pub fn normalize_date(s: &str) -> String {
    let s = s.trim();
    let month = |m: &str| -> Option<u32> {
        let m = m.to_lowercase();
        let names = [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        names
            .iter()
            .position(|n| m.starts_with(n))
            .map(|p| p as u32 + 1)
    };
    let fmt = |y: i32, m: u32, d: u32| -> Option<String> {
        ((1..=12).contains(&m) && (1..=31).contains(&d) && (1000..=9999).contains(&y))
            .then(|| format!("{y:04}-{m:02}-{d:02}"))
    };
    let tokens: Vec<&str> = s
        .split(|c: char| c == ',' || c.is_whitespace() || c == 'T')
        .filter(|t| !t.is_empty())
        .collect();
    // 2024-03-23, 2024/03/23 (optionally followed by a time)
    if let Some(first) = tokens.first() {
        let parts: Vec<&str> = first.split(['-', '/', '.']).collect();
        if parts.len() == 3 && parts[0].len() == 4 {
            if let (Ok(y), Ok(m), Ok(d)) = (parts[0].parse(), parts[1].parse(), parts[2].parse()) {
                if let Some(out) = fmt(y, m, d) {
                    return out;
                }
            }
        }
    }
    // March 23, 2024 / 23 March 2024
    if tokens.len() >= 3 {
        if let (Some(m), Ok(d), Ok(y)) = (month(tokens[0]), tokens[1].parse(), tokens[2].parse()) {
            if let Some(out) = fmt(y, m, d) {
                return out;
            }
        }
        if let (Ok(d), Some(m), Ok(y)) = (tokens[0].parse(), month(tokens[1]), tokens[2].parse()) {
            if let Some(out) = fmt(y, m, d) {
                return out;
            }
        }
    }
    s.to_string()
}

/// Removes what must not reach a terminal raw: control characters (newlines and tabs become
/// spaces), bidirectional overrides and zero-width characters.
pub fn sanitize_for_terminal(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '\n' | '\t' | '\r' => Some(' '),
            c if c.is_control() => None,
            '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}' => None,
            c => Some(c),
        })
        .collect()
}

/// The text of a file's bytes: UTF-8 (a BOM is dropped); UTF-16 when it opens with its
/// byte-order mark (what Windows tools save as "Unicode"); else Windows-1252, which decodes any
/// byte. With the text comes what was not read as it stands, for a warning: bytes that are not
/// UTF-8 (read as Windows-1252), or not UTF-16 after its mark (replaced by U+FFFD).
pub fn decode_text(bytes: &[u8]) -> (String, Option<&'static str>) {
    if let Some((encoding, _)) = utf16_bom(bytes) {
        let (text, malformed) = encoding.decode_with_bom_removal(bytes);
        let note = malformed
            .then_some("opens as UTF-16 but has bytes that are not; they were read as U+FFFD (�)");
        return (text.into_owned(), note);
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(_) => {
            let (text, _, _) = encoding_rs::WINDOWS_1252.decode(bytes);
            (
                text.into_owned(),
                Some("not valid UTF-8; read as Windows-1252 (Latin-1)"),
            )
        }
    }
}

/// The UTF-16 encoding whose byte-order mark opens `bytes`, if one does.
pub fn utf16_bom(bytes: &[u8]) -> Option<(&'static encoding_rs::Encoding, usize)> {
    encoding_rs::Encoding::for_bom(bytes).filter(|(e, _)| *e != encoding_rs::UTF_8)
}

/// Whether bytes look like a binary file rather than text: a NUL byte, or many control bytes,
/// in the first 8 KiB. UTF-16 text with its byte-order mark is text (its NUL bytes are the high
/// halves of ASCII characters).
pub fn looks_binary(bytes: &[u8]) -> bool {
    if utf16_bom(bytes).is_some() {
        return false;
    }
    let head = &bytes[..bytes.len().min(8192)];
    if head.contains(&0) {
        return true;
    }
    let controls = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c))
        .count();
    controls * 10 > head.len().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headline_then_paragraphs() {
        let p = parse_article_text("\n# Title here\n\nFirst para.\n\n  Second   para. \n");
        assert_eq!(p.title, "Title here");
        assert_eq!(p.paragraphs, vec!["First para.", "Second para."]);
    }

    #[test]
    fn front_matter_gives_the_headline_and_metadata_and_is_not_a_paragraph() {
        let yaml = "---\ntitle: \"Ceasefire talks resume in Cairo\"\ndate: 2024-03-23T09:30:00Z\nsource: Reuters\nauthor: 'A. Writer'\ntags:\n  - gaza\n  - diplomacy\n---\n\n# Ceasefire talks resume in Cairo\n\nNegotiators met on Saturday.\n\n## Background\n\nThe talks stalled in March.\n";
        let p = parse_article_text(yaml);
        assert_eq!(p.title, "Ceasefire talks resume in Cairo");
        assert_eq!(
            p.paragraphs,
            [
                "Negotiators met on Saturday.",
                "Background",
                "The talks stalled in March."
            ]
        );
        assert_eq!(p.meta.date.as_deref(), Some("2024-03-23"));
        assert_eq!(p.meta.source.as_deref(), Some("Reuters"));
        assert_eq!(
            p.meta.extra.get("author").map(String::as_str),
            Some("A. Writer")
        );
        assert!(
            !p.meta.extra.contains_key("tags"),
            "a list is not one field"
        );

        // TOML (Hugo), a link whose host is the source, and a body with no heading.
        let toml = "+++\ntitle = 'Markets rally'\nurl = \"https://www.example.com/markets/rally\"\n+++\nShares rose.\nBonds fell.\n";
        let p = parse_article_text(toml);
        assert_eq!(p.title, "Markets rally");
        assert_eq!(p.paragraphs, ["Shares rose.", "Bonds fell."]);
        assert_eq!(p.meta.source.as_deref(), Some("example.com"));

        // No title field: the first line after the block is the headline, as in any text.
        let p = parse_article_text("---\ndate: 1 May 2024\n---\nHeadline\nBody.\n");
        assert_eq!(
            (p.title.as_str(), &p.paragraphs[..]),
            ("Headline", &["Body.".to_string()][..])
        );
        assert_eq!(p.meta.date.as_deref(), Some("2024-05-01"));

        // A rule that is never closed, or that sets off a story's first lines, is text.
        let p = parse_article_text("---\nHeadline: the day after\nBody.\n");
        assert_eq!(p.title, "---");
        assert_eq!(p.paragraphs.len(), 2);
        let p = parse_article_text("---\nBreaking: markets fall\n---\nShares fell.\n");
        assert_eq!(p.title, "---");
        assert_eq!(
            p.paragraphs,
            ["Breaking: markets fall", "---", "Shares fell."]
        );
        let p = parse_article_text("---\nMarkets fall as rates rise\n---\nShares fell.\n");
        assert_eq!(p.paragraphs[0], "Markets fall as rates rise");
    }

    #[test]
    fn utf16_with_its_mark_is_text() {
        let text = "Headline\n\nCafé au lait, 10 €.\n";
        for (mark, wide) in [
            (
                &[0xFF, 0xFE][..],
                text.encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect::<Vec<u8>>(),
            ),
            (
                &[0xFE, 0xFF][..],
                text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
            ),
        ] {
            let bytes = [mark, &wide].concat();
            assert!(!looks_binary(&bytes));
            assert_eq!(decode_text(&bytes), (text.to_string(), None));
            assert!(
                looks_binary(&wide),
                "without its mark it cannot be told from binary"
            );
        }
        // An odd byte at the end is not UTF-16: replaced, and said.
        let (decoded, note) = decode_text(&[0xFF, 0xFE, b'A', 0, b'B']);
        assert_eq!(decoded, "A\u{FFFD}");
        assert!(note.unwrap().contains("UTF-16"));
        assert_eq!(decode_text(b"caf\xe9").0, "café");
    }

    #[test]
    fn a_headline_alone_is_also_the_one_paragraph() {
        let line = "Israel and Hamas agreed to extend the truce in Gaza by two days, Qatar said.";
        let p = parse_article_text(&format!("\n  {line}  \n\n"));
        assert_eq!(p.title, line);
        assert_eq!(p.paragraphs, vec![line]);
        let p = parse_titled("Truce", "");
        assert_eq!(p.paragraphs, vec!["Truce"]);
        let p = parse_titled(" Truce\t extended ", "Qatar said so.\n\nMore.");
        assert_eq!(p.title, "Truce extended");
        assert_eq!(p.paragraphs, vec!["Qatar said so.", "More."]);
        assert_eq!(parse_article_text(" \n\n"), ParsedArticle::default());
        assert_eq!(parse_titled("", " "), ParsedArticle::default());
    }

    #[test]
    fn repeated_paragraphs_are_kept_once() {
        let p = parse_article_text("T\nA a.\nB b.\nA a.\nB  b.\nC c.");
        assert_eq!(p.paragraphs, vec!["A a.", "B b.", "C c."]);
    }

    #[test]
    fn furniture_tail_becomes_metadata() {
        let text = "Headline\nStory one.\nStory two.\nSimilar Readings (2 items)\nOther headline\nAnother headline\nSummary\nA summary of it.\nStatistics\n251\nWords1\nRead CountDetails\nID: abc\nCategory ID: nhk\nURL: https://www3.nhk.or.jp/news/1/\nDate: March 23, 2024\nCreated: 2024/03/23 06:30";
        let p = parse_article_text(text);
        assert_eq!(p.paragraphs, vec!["Story one.", "Story two."]);
        assert_eq!(
            p.meta.url.as_deref(),
            Some("https://www3.nhk.or.jp/news/1/")
        );
        assert_eq!(p.meta.date.as_deref(), Some("2024-03-23"));
        assert_eq!(
            p.meta.extra.get("summary").map(String::as_str),
            Some("A summary of it.")
        );
        assert_eq!(p.meta.source.as_deref(), Some("www3.nhk.or.jp"));
    }

    #[test]
    fn a_bare_agency_credit_is_not_a_paragraph() {
        let p = parse_article_text("Headline\nStory one.\nStory two.\nReuters");
        assert_eq!(p.paragraphs, vec!["Story one.", "Story two."]);
        assert_eq!(p.meta.credit.as_deref(), Some("Reuters"));
    }

    #[test]
    fn ordinary_story_lines_are_kept() {
        // A crosshead, a line that starts like a label, and a number inside the story stay.
        let text = "Headline\nSummary of the talks was short.\nTruce 'producing results'\n251\nThe end of it.";
        let p = parse_article_text(text);
        assert_eq!(p.paragraphs.len(), 4);
    }

    #[test]
    fn dates_are_normalised() {
        for (given, want) in [
            ("March 23, 2024", "2024-03-23"),
            ("23 March 2024", "2024-03-23"),
            ("2024/03/23 06:30", "2024-03-23"),
            ("2024-03-23T06:30:00Z", "2024-03-23"),
            ("sometime", "sometime"),
        ] {
            assert_eq!(normalize_date(given), want, "{given}");
        }
    }

    #[test]
    fn terminal_text_loses_controls_and_bidi() {
        assert_eq!(
            sanitize_for_terminal("a\u{1b}[31mb\u{202E}c\td"),
            "a[31mbc d"
        );
    }

    #[test]
    fn latin1_falls_back() {
        let (text, fallback) = decode_text(b"caf\xe9");
        assert_eq!(text, "café");
        assert!(fallback.is_some_and(|n| n.contains("Windows-1252")));
        assert!(looks_binary(b"\x00\x01\x02abc"));
        assert!(!looks_binary("plain text\n".as_bytes()));
    }
}
