//! RSS and Atom feeds, and the pages their entries link to.
//!
//! A feed is fetched politely ([`fetch`]: `If-None-Match` / `If-Modified-Since` from the last
//! answer, a size cap, a redirect cap, a timeout) and parsed by `feed-rs` ([`parse_feed`]). Each
//! entry becomes an article: its title, date, source (the entry's own, else the feed's title),
//! URL, and text (the entry's content, else its summary; HTML cut into paragraphs). An entry is
//! keyed by its guid (Atom `id`), else its link, so an entry read again is the same article and
//! an updated one replaces its older version ([`entry_key`]: URLs in their canonical form, other
//! guids scoped by their feed). With `--fetch-pages`, an entry that carries only a
//! summary gets the text of the page it links to, extracted by `dom_smoothie` (a port of
//! Mozilla's Readability).
//!
//! Nothing here knows the store: what to poll when is [`FeedState`]'s, kept by the caller.

use super::source::{sha256_hex, SourceArticle, Warning};
use crate::text;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// Caps on one HTTP answer.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// Bytes of the (decompressed) body read at most: past it the answer is refused.
    pub max_bytes: usize,
    pub max_redirects: u32,
    /// For connecting, and for the whole answer.
    pub timeout: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            max_bytes: 16 << 20,
            max_redirects: 5,
            timeout: Duration::from_secs(20),
        }
    }
}

/// What a poll brought.
#[derive(Debug)]
pub enum Fetched {
    /// 304: nothing new since the last answer.
    NotModified,
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
        /// Where the answer came from, after redirects.
        final_url: String,
    },
}

/// Whether `url` may be fetched: http or https, with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .ok_or_else(|| format!("{url}: only http:// and https:// URLs are followed"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{url}: the URL has no host"));
    }
    Ok(())
}

fn agent(limits: &FetchLimits) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(limits.timeout)
        .timeout(limits.timeout)
        .redirects(limits.max_redirects)
        .user_agent(concat!("likewise/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// GETs `url`, conditionally on the validators of the last answer. Errors are one line naming
/// what went wrong (status, timeout, too large, redirects).
pub fn fetch(
    url: &str,
    etag: Option<&str>,
    last_modified: Option<&str>,
    limits: &FetchLimits,
) -> Result<Fetched, String> {
    check_url(url)?;
    let mut request = agent(limits).get(url);
    if let Some(e) = etag {
        request = request.set("If-None-Match", e);
    }
    if let Some(m) = last_modified {
        request = request.set("If-Modified-Since", m);
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            return Err(format!("HTTP {code} {}", r.status_text()))
        }
        Err(ureq::Error::Transport(t)) => {
            let message = t.to_string();
            return Err(if message.contains("redirect") {
                format!(
                    "more than {} redirects (a loop?): {message}",
                    limits.max_redirects
                )
            } else {
                message
            });
        }
    };
    if response.status() == 304 {
        return Ok(Fetched::NotModified);
    }
    let header = |name: &str| response.header(name).map(str::to_string);
    let etag = header("ETag");
    let last_modified = header("Last-Modified");
    let final_url = response.get_url().to_string();
    let mut bytes = Vec::new();
    response
        .into_reader()
        .take(limits.max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the answer: {e}"))?;
    if bytes.len() > limits.max_bytes {
        return Err(format!(
            "the answer is larger than {} MiB (uncompressed); not read",
            limits.max_bytes >> 20
        ));
    }
    Ok(Fetched::Body {
        bytes,
        etag,
        last_modified,
        final_url,
    })
}

/// A feed's entries as articles.
#[derive(Debug)]
pub struct ParsedFeed {
    pub title: Option<String>,
    pub articles: Vec<SourceArticle>,
    /// Entries left out, each with why.
    pub skipped: Vec<Warning>,
    /// Entries that carry only a summary, with their links (for `--fetch-pages`): their place
    /// in `articles`.
    pub summaries_only: Vec<(usize, String)>,
}

/// Query parameters that only say where a reader came from: a link with or without them is
/// the same article.
const TRACKING_PARAMETERS: &[&str] = &[
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "mc_cid", "mc_eid",
    "igshid", "ocid", "cmpid", "ref_src", "_ga", "_gl",
];

/// A web address in the form that names its article: scheme and host in lower case, no default
/// port, no fragment, no tracking parameters (`utm_*` and the like; the others keep their order).
/// `None` for what is not an absolute http(s) URL.
pub fn canonical_url(raw: &str) -> Option<String> {
    let mut url = url::Url::parse(raw.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return None;
    }
    url.set_fragment(None);
    let tracking = |name: &str| {
        let name = name.to_ascii_lowercase();
        name.starts_with("utm_") || TRACKING_PARAMETERS.contains(&name.as_str())
    };
    if url.query_pairs().any(|(name, _)| tracking(&name)) {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(name, _)| !tracking(name))
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
    } else if url.query() == Some("") {
        url.set_query(None);
    }
    Some(url.to_string())
}

/// The key of a feed entry whose guid (or, without one, link) is `id`: a URL in its canonical
/// form, so the same article linked with tracking parameters or read from two feeds is one; a
/// URN or tag URI as it is (unique by their definition); any other guid (`post-123`) scoped by
/// the feed's own address, so two feeds numbering their entries alike do not overwrite each
/// other. Empty when `id` is.
pub fn entry_key(feed_url: &str, id: &str) -> String {
    if id.is_empty() {
        return String::new();
    }
    if let Some(url) = canonical_url(id) {
        return url;
    }
    let lower = id.to_ascii_lowercase();
    if lower.starts_with("urn:") || lower.starts_with("tag:") {
        return id.to_string();
    }
    let feed = canonical_url(feed_url).unwrap_or_else(|| feed_url.to_string());
    format!("{feed}#{id}")
}

/// Parses RSS 2.0, RSS 1.0 or Atom `bytes` fetched from `url`.
pub fn parse_feed(url: &str, bytes: &[u8], max_article_bytes: usize) -> Result<ParsedFeed, String> {
    let parser = feed_rs::parser::Builder::new()
        .base_uri(Some(url))
        // An entry without a guid is keyed by its link; without either it gets no key (and is
        // skipped), never a random one that would store it again at every poll.
        .id_generator(|links, _title, _uri| {
            links.first().map(|l| l.href.clone()).unwrap_or_default()
        })
        .build();
    let feed = parser.parse(bytes).map_err(|e| {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).to_ascii_lowercase();
        if head.contains("<html") || head.contains("<!doctype html") {
            "not an RSS or Atom feed: the answer is an HTML page".to_string()
        } else {
            format!("not a readable RSS or Atom feed: {e}")
        }
    })?;
    let feed_title = feed
        .title
        .as_ref()
        .map(|t| text::normalize_whitespace(&t.content))
        .filter(|t| !t.is_empty());
    let mut out = ParsedFeed {
        title: feed_title.clone(),
        articles: Vec::new(),
        skipped: Vec::new(),
        summaries_only: Vec::new(),
    };
    let mut keys = std::collections::HashSet::new();
    for (n, entry) in feed.entries.into_iter().enumerate() {
        let place = PathBuf::from(format!("{url} (entry {})", n + 1));
        let skip = |reason: String| Warning {
            path: place.clone(),
            reason,
        };
        let link = entry.links.first().map(|l| l.href.clone());
        let key = entry_key(url, entry.id.trim());
        if key.is_empty() {
            out.skipped.push(skip(
                "the entry has neither a guid nor a link; skipped".into(),
            ));
            continue;
        }
        if !keys.insert(key.clone()) {
            out.skipped.push(skip(format!(
                "guid `{key}` repeats an earlier entry of the feed; skipped"
            )));
            continue;
        }
        let title = entry
            .title
            .as_ref()
            .map(|t| text::normalize_whitespace(&t.content))
            .unwrap_or_default();
        let content = entry.content.as_ref().and_then(|c| c.body.clone());
        let summary = entry.summary.as_ref().map(|s| s.content.clone());
        let only_summary = content.as_deref().is_none_or(|c| c.trim().is_empty());
        let body = if only_summary {
            summary.unwrap_or_default()
        } else {
            content.unwrap_or_default()
        };
        if body.len() > max_article_bytes {
            out.skipped.push(skip(super::source::over_article_limit(
                body.len(),
                max_article_bytes,
            )));
            continue;
        }
        let paragraphs = html_paragraphs(&body);
        let date = entry
            .published
            .or(entry.updated)
            .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        let source = entry
            .source
            .clone()
            .filter(|s| !s.trim().is_empty())
            .or_else(|| feed_title.clone());
        let article = feed_article(key, &title, &paragraphs, date, source, link.clone());
        let Some(article) = article else {
            out.skipped
                .push(skip("the entry has no title and no text; skipped".into()));
            continue;
        };
        if only_summary {
            if let Some(link) = link {
                out.summaries_only.push((out.articles.len(), link));
            }
        }
        out.articles.push(article);
    }
    Ok(out)
}

/// An article of a feed entry or page; `None` when it has no text at all.
pub fn feed_article(
    key: String,
    title: &str,
    paragraphs: &[String],
    date: Option<String>,
    source: Option<String>,
    url: Option<String>,
) -> Option<SourceArticle> {
    let body = paragraphs.join("\n\n");
    let mut parsed = text::parse_titled(title, &body);
    if parsed.paragraphs.is_empty() && parsed.title.is_empty() {
        return None;
    }
    parsed.meta.date = date.map(|d| text::normalize_date(&d));
    parsed.meta.source = source;
    parsed.meta.url = url;
    let meta = serde_json::to_string(&parsed.meta).expect("metadata serialises");
    let content_hash = sha256_hex(&[title.as_bytes(), body.as_bytes(), meta.as_bytes()]);
    Some(SourceArticle {
        key,
        file: None,
        parsed,
        content_hash,
        given: None,
    })
}

/// The paragraphs of an HTML fragment (a feed entry's content): the text of each block
/// element, or the whole text when it has no blocks (a plain-text summary).
pub fn html_paragraphs(html: &str) -> Vec<String> {
    if !html.contains('<') {
        return text_paragraphs(&decode_entities(html));
    }
    let doc = dom_query::Document::fragment(html);
    doc.select("script, style, noscript, iframe, figure figcaption")
        .remove();
    let blocks = doc.select("p, li, h1, h2, h3, h4, h5, h6, blockquote, pre");
    let mut out: Vec<String> = blocks
        .iter()
        // A block inside another block is read with its parent.
        .filter(|b| !b.parent().is("p, li, blockquote, pre"))
        .map(|b| text::normalize_whitespace(&b.text()))
        .filter(|t| !t.is_empty())
        .collect();
    if out.is_empty() {
        out = text_paragraphs(&doc.select("body").text());
        if out.is_empty() {
            out = text_paragraphs(&doc.root().text());
        }
    }
    out
}

fn text_paragraphs(text: &str) -> Vec<String> {
    text.split("\n\n")
        .map(text::normalize_whitespace)
        .filter(|p| !p.is_empty())
        .collect()
}

/// Entities in a plain-text summary (`&amp;`, `&#8217;`), as the HTML parser would read them.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    dom_query::Document::fragment(format!("<p>{s}</p>"))
        .select("p")
        .text()
        .to_string()
}

/// The article of a web page, by Readability: its title and its paragraphs.
pub fn page_article(url: &str, limits: &FetchLimits) -> Result<(String, Vec<String>), String> {
    let Fetched::Body { bytes, .. } = fetch(url, None, None, limits)? else {
        return Err("the page answered 304 to a plain request".into());
    };
    let html = String::from_utf8_lossy(&bytes).into_owned();
    let config = dom_smoothie::Config {
        text_mode: dom_smoothie::TextMode::Formatted,
        ..Default::default()
    };
    let mut reader = dom_smoothie::Readability::new(html, Some(url), Some(config))
        .map_err(|e| format!("not a readable page: {e}"))?;
    let article = reader
        .parse()
        .map_err(|e| format!("no article found in the page: {e}"))?;
    let paragraphs = text_paragraphs(&article.text_content);
    if paragraphs.is_empty() {
        return Err("no article text found in the page".into());
    }
    Ok((text::normalize_whitespace(&article.title), paragraphs))
}

/// What is remembered of a feed between polls (committed with the store, so a restarted
/// watcher resumes where it was).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// Failed polls in a row (0 after a good one).
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Seconds since the epoch of the last poll that answered.
    #[serde(default)]
    pub last_success: u64,
    /// Entries stored from it, all polls together.
    #[serde(default)]
    pub entries_stored: u64,
}

impl FeedState {
    /// How long to wait before the next poll: the interval, doubled after each failure in a
    /// row, at most an hour (or the interval, when it is longer).
    pub fn delay(&self, interval: Duration) -> Duration {
        if self.failures == 0 {
            return interval;
        }
        let backoff = interval.saturating_mul(1 << self.failures.min(10));
        backoff.min(interval.max(Duration::from_secs(3600)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSS: &str = r#"<?xml version="1.0"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">
<channel><title>Wire Desk</title><link>http://127.0.0.1/</link>
<item><title>Talks resume in Cairo</title><guid>wire-1</guid><link>http://127.0.0.1/a</link>
<pubDate>Tue, 05 Mar 2024 10:00:00 GMT</pubDate>
<description>Short summary.</description>
<content:encoded><![CDATA[<p>Negotiators met on Tuesday &amp; talked.</p><p>A second paragraph, with <b>bold</b> words.</p>]]></content:encoded></item>
<item><title>Only a summary</title><link>http://127.0.0.1/b</link>
<description>The summary &amp; nothing else.</description></item>
<item><description>no title, no link, no guid</description></item>
</channel></rss>"#;

    #[test]
    fn entries_become_articles_keyed_by_guid_or_link() {
        let feed = parse_feed("http://127.0.0.1/feed", RSS.as_bytes(), 1 << 20).unwrap();
        assert_eq!(feed.title.as_deref(), Some("Wire Desk"));
        assert_eq!(feed.articles.len(), 2);
        let a = &feed.articles[0];
        assert_eq!(a.key, "http://127.0.0.1/feed#wire-1");
        assert_eq!(a.parsed.title, "Talks resume in Cairo");
        assert_eq!(
            a.parsed.paragraphs,
            vec![
                "Negotiators met on Tuesday & talked.",
                "A second paragraph, with bold words."
            ]
        );
        assert_eq!(a.parsed.meta.source.as_deref(), Some("Wire Desk"));
        assert_eq!(
            a.parsed.meta.date.as_deref().map(|d| &d[..10]),
            Some("2024-03-05")
        );
        assert_eq!(a.parsed.meta.url.as_deref(), Some("http://127.0.0.1/a"));
        let b = &feed.articles[1];
        assert_eq!(b.key, "http://127.0.0.1/b");
        assert_eq!(b.parsed.paragraphs, vec!["The summary & nothing else."]);
        assert_eq!(
            feed.summaries_only,
            vec![(1, "http://127.0.0.1/b".to_string())]
        );
        assert_eq!(feed.skipped.len(), 1, "{:?}", feed.skipped);
        assert!(feed.skipped[0].reason.contains("neither a guid nor a link"));
    }

    #[test]
    fn keys_name_the_article_not_the_way_it_was_linked() {
        assert_eq!(
            canonical_url("HTTPS://News.Example.org:443/a/b?id=7&utm_source=rss&fbclid=x#top"),
            Some("https://news.example.org/a/b?id=7".into())
        );
        assert_eq!(
            canonical_url("http://example.org/story?utm_medium=feed"),
            Some("http://example.org/story".into())
        );
        assert_eq!(
            canonical_url("http://example.org/s?b=2&a=1"),
            Some("http://example.org/s?b=2&a=1".into())
        );
        assert_eq!(canonical_url("post-123"), None);
        assert_eq!(canonical_url("ftp://example.org/x"), None);
        let feed = "http://127.0.0.1/feed";
        assert_eq!(
            entry_key(feed, "https://example.org/a?utm_campaign=x"),
            entry_key("http://127.0.0.1/other", "https://example.org/a")
        );
        assert_eq!(entry_key(feed, "urn:uuid:1234"), "urn:uuid:1234");
        assert_eq!(
            entry_key(feed, "tag:example.org,2024:1"),
            "tag:example.org,2024:1"
        );
        assert_eq!(entry_key(feed, "123"), "http://127.0.0.1/feed#123");
        assert_ne!(
            entry_key(feed, "123"),
            entry_key("http://127.0.0.1/other", "123")
        );
        assert_eq!(entry_key(feed, ""), "");
    }

    #[test]
    fn the_same_entry_read_twice_is_the_same_article() {
        let one = parse_feed("http://127.0.0.1/feed", RSS.as_bytes(), 1 << 20).unwrap();
        let two = parse_feed("http://127.0.0.1/feed", RSS.as_bytes(), 1 << 20).unwrap();
        assert_eq!(one.articles[0].content_hash, two.articles[0].content_hash);
        let edited = RSS.replace("talked.", "talked again.");
        let three = parse_feed("http://127.0.0.1/feed", edited.as_bytes(), 1 << 20).unwrap();
        assert_eq!(three.articles[0].key, one.articles[0].key);
        assert_ne!(three.articles[0].content_hash, one.articles[0].content_hash);
    }

    #[test]
    fn html_and_broken_xml_are_refused_with_the_reason() {
        let e = parse_feed(
            "http://x/",
            b"<!DOCTYPE html><html><body>hi</body></html>",
            1 << 20,
        )
        .unwrap_err();
        assert!(e.contains("HTML page"), "{e}");
        let e = parse_feed("http://x/", b"<rss><channel><item><title>cut", 1 << 20).unwrap_err();
        assert!(e.contains("not a readable RSS or Atom feed"), "{e}");
    }

    #[test]
    fn a_feed_in_latin_1_is_read_as_it_says() {
        let mut bytes = br#"<?xml version="1.0" encoding="ISO-8859-1"?><rss version="2.0"><channel><title>Le Desk</title><item><title>Caf"#.to_vec();
        bytes.push(0xE9);
        bytes.extend_from_slice(br#" ouvert</title><guid>x1</guid><description>Un caf"#);
        bytes.push(0xE9);
        bytes.extend_from_slice(b" ici.</description></item></channel></rss>");
        let feed = parse_feed("http://127.0.0.1/f", &bytes, 1 << 20).unwrap();
        assert_eq!(feed.articles[0].parsed.title, "Caf\u{e9} ouvert");
        assert_eq!(
            feed.articles[0].parsed.paragraphs,
            vec!["Un caf\u{e9} ici."]
        );
    }

    #[test]
    fn atom_entries_are_read() {
        let atom = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Atom Desk</title><id>urn:feed</id>
<updated>2024-03-05T10:00:00Z</updated>
<entry><title>Atom story</title><id>urn:story:1</id><updated>2024-03-06T08:00:00Z</updated>
<link href="http://127.0.0.1/s1"/><content type="html">&lt;p&gt;One.&lt;/p&gt;&lt;p&gt;Two.&lt;/p&gt;</content></entry>
</feed>"#;
        let feed = parse_feed("http://127.0.0.1/atom", atom.as_bytes(), 1 << 20).unwrap();
        assert_eq!(feed.articles.len(), 1);
        assert_eq!(feed.articles[0].key, "urn:story:1");
        assert_eq!(feed.articles[0].parsed.paragraphs, vec!["One.", "Two."]);
    }

    #[test]
    fn only_http_urls_are_followed() {
        assert!(check_url("http://127.0.0.1:8080/feed").is_ok());
        assert!(check_url("https://example.org/rss").is_ok());
        assert!(check_url("file:///etc/passwd").is_err());
        assert!(check_url("ftp://x/").is_err());
        assert!(check_url("http:///nohost").is_err());
    }

    #[test]
    fn failures_back_off_up_to_an_hour() {
        let mut s = FeedState::default();
        let minute = Duration::from_secs(60);
        assert_eq!(s.delay(minute), minute);
        s.failures = 1;
        assert_eq!(s.delay(minute), Duration::from_secs(120));
        s.failures = 20;
        assert_eq!(s.delay(minute), Duration::from_secs(3600));
    }
}
