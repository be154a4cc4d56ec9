//! Human tables of the engine's results (the CLI's default format). Text from articles is
//! cleaned for the terminal and shortened; JSON output carries it whole.

use crate::engine::docs::*;
use crate::text::sanitize_for_terminal;
use std::io::{Result, Write};

/// `s` cleaned for a terminal, cut to `max_chars` with an ellipsis.
pub fn shorten(s: &str, max_chars: usize) -> String {
    let clean = sanitize_for_terminal(s);
    if clean.chars().count() <= max_chars {
        return clean;
    }
    let mut out: String = clean.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One hit per line; several queries' hits carry `"query": i`.
pub fn query_jsonl(out: &mut impl Write, result: &QueryResult) -> Result<()> {
    let many = matches!(result, QueryResult::Many { .. });
    for (i, (_, hits)) in result.answers().into_iter().enumerate() {
        for h in hits {
            let mut v = serde_json::to_value(h).expect("documents serialize");
            if many {
                v["query"] = serde_json::json!(i);
            }
            writeln!(out, "{v}")?;
        }
    }
    Ok(())
}

pub fn query(out: &mut impl Write, result: &QueryResult) -> Result<()> {
    let answers = result.answers();
    let many = answers.len() > 1;
    for (i, (label, hits)) in answers.into_iter().enumerate() {
        if many {
            let what = match label {
                QueryLabel::Like { like } => format!("like {like}"),
                QueryLabel::Text { text } => format!("“{text}”"),
            };
            writeln!(
                out,
                "{}== query {}: {}",
                if i > 0 { "\n" } else { "" },
                i + 1,
                shorten(&what, 100)
            )?;
        }
        hits_table(out, hits, result.level())?;
    }
    Ok(())
}

fn hits_table(out: &mut impl Write, hits: &[Hit], level: Level) -> Result<()> {
    if hits.is_empty() {
        writeln!(out, "no results")?;
        return Ok(());
    }
    for h in hits {
        let a = &h.article;
        let place = a.place();
        writeln!(
            out,
            "{:>2}. {:.3}  {}",
            h.rank,
            h.score,
            shorten(&a.title, 90)
        )?;
        let meta: Vec<&str> = [&h.dateline.date, &h.dateline.source]
            .iter()
            .filter_map(|v| v.as_deref())
            .filter(|v| !v.is_empty())
            .collect();
        let meta = if meta.is_empty() {
            String::new()
        } else {
            format!("  [{}]", shorten(&meta.join(" · "), 40))
        };
        writeln!(out, "           {}{}", shorten(&place, 80), meta)?;
        let half = |name: &str, h: &Option<HalfDoc>, digits: usize| {
            h.map(|h| match h.rank {
                Some(r) => format!("{name} {:.digits$} #{r}", h.score),
                None => format!("{name} {:.digits$}", h.score),
            })
        };
        let why: Vec<String> = [
            half("meaning", &h.semantic, 3),
            half("words", &h.lexical, 2),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !why.is_empty() {
            writeln!(out, "           {}", why.join(" · "))?;
        }
        if let (Some(text), Some(p)) = (&h.text, h.paragraph) {
            let label = match level {
                Level::Article => format!("¶{p} {:.3}", h.paragraph_score.unwrap_or(0.0)),
                Level::Paragraph => format!("¶{p}"),
            };
            writeln!(out, "           {label}  “{}”", shorten(text, 150))?;
        }
    }
    Ok(())
}

pub fn clusters(out: &mut impl Write, result: &ClustersResult, show: usize) -> Result<()> {
    if result.clusters.is_empty() {
        writeln!(out, "no clusters")?;
    }
    for c in &result.clusters {
        let dates = c
            .dates
            .as_ref()
            .map(|d| {
                if d.from == d.to {
                    format!("  [{}]", d.from)
                } else {
                    format!("  [{} … {}]", d.from, d.to)
                }
            })
            .unwrap_or_default();
        writeln!(
            out,
            "#{:<3} {:>5} articles  {}{}",
            c.id,
            c.size,
            shorten(&c.label, 80),
            dates
        )?;
        writeln!(out, "      keywords: {}", c.keywords.join(", "))?;
        for m in c.members.iter().take(show) {
            writeln!(
                out,
                "      {:.3}  {}  {}",
                m.score.unwrap_or(0.0),
                shorten(&m.article.place(), 50),
                shorten(&m.article.title, 60)
            )?;
        }
        if c.members.len() > show {
            writeln!(out, "      … {} more", c.members.len() - show)?;
        }
    }
    let outliers = &result.outliers;
    if !outliers.is_empty() {
        let listed = show.max(10);
        writeln!(out, "outliers ({}):", outliers.len())?;
        for m in outliers.iter().take(listed) {
            writeln!(
                out,
                "      {}  {}",
                shorten(&m.article.place(), 50),
                shorten(&m.article.title, 60)
            )?;
        }
        if outliers.len() > listed {
            writeln!(
                out,
                "      … {} more (--format json lists all)",
                outliers.len() - listed
            )?;
        }
    }
    Ok(())
}

/// The counts of each tier, on stderr.
pub fn dupes_summary(result: &DupesResult) {
    use crate::dupes::Level as L;
    let count = |level: L, tier: Tier| {
        result
            .pairs
            .iter()
            .filter(|p| p.level == level && p.tier == tier)
            .count()
    };
    eprintln!(
        "likewise: {} articles; article pairs: {} exact, {} near-copy, {} rewrite; paragraph pairs: {} exact, {} near-copy, {} rewrite; in {:.2} s",
        result.articles,
        count(L::Article, Tier::Exact),
        count(L::Article, Tier::NearCopy),
        count(L::Article, Tier::Rewrite),
        count(L::Paragraph, Tier::Exact),
        count(L::Paragraph, Tier::NearCopy),
        count(L::Paragraph, Tier::Rewrite),
        result.seconds
    );
}

pub fn dupes(out: &mut impl Write, result: &DupesResult) -> Result<()> {
    if result.pairs.is_empty() {
        writeln!(out, "no duplicates")?;
    }
    let at = |s: &SideDoc| match s.paragraph {
        Some(n) => format!("{} ¶{n}", s.article.place()),
        None => s.article.place(),
    };
    for p in &result.pairs {
        let level = match p.level {
            crate::dupes::Level::Article => "article",
            crate::dupes::Level::Paragraph => "paragraph",
        };
        writeln!(
            out,
            "{:<9} {:<9} {:.3}  overlap {:.2}  {}  ⟷  {}",
            p.tier.name(),
            level,
            p.score,
            p.overlap,
            shorten(&at(&p.a), 45),
            shorten(&at(&p.b), 45)
        )?;
        match p.level {
            crate::dupes::Level::Article => writeln!(
                out,
                "          {}  ⟷  {}",
                shorten(&p.a.article.title, 55),
                shorten(&p.b.article.title, 55)
            )?,
            crate::dupes::Level::Paragraph => {
                let text = |s: &SideDoc| shorten(s.text.as_deref().unwrap_or(""), 110);
                writeln!(out, "          “{}”", text(&p.a))?;
                if p.tier != Tier::Exact {
                    writeln!(out, "          “{}”", text(&p.b))?;
                }
            }
        }
    }
    Ok(())
}

pub fn compare(out: &mut impl Write, r: &CompareResult) -> Result<()> {
    let shared = r
        .matches
        .iter()
        .filter(|m| m.relation == crate::compare::Relation::Shared)
        .count();
    for (side, a) in [("A", &r.a), ("B", &r.b)] {
        writeln!(
            out,
            "{side}  {}  {}",
            shorten(&a.place(), 60),
            shorten(&a.title, 60)
        )?;
    }
    writeln!(
        out,
        "{} shared, {} paraphrased; {} of A's {} paragraphs only in A, {} of B's {} only in B",
        shared,
        r.matches.len() - shared,
        r.only_a.len(),
        r.paragraphs_a,
        r.only_b.len(),
        r.paragraphs_b
    )?;
    writeln!(out)?;
    for m in &r.matches {
        let rel = match m.relation {
            crate::compare::Relation::Shared => "shared",
            crate::compare::Relation::Paraphrased => "paraphrased",
        };
        writeln!(
            out,
            "{rel:<11} A¶{:<3} B¶{:<3} {:.3}  overlap {:.2}",
            m.a.paragraph, m.b.paragraph, m.score, m.overlap
        )?;
        writeln!(out, "    A “{}”", shorten(&m.a.text, 110))?;
        if m.relation != crate::compare::Relation::Shared || m.overlap < 1.0 {
            writeln!(out, "    B “{}”", shorten(&m.b.text, 110))?;
        }
    }
    for (side, only) in [("A", &r.only_a), ("B", &r.only_b)] {
        if only.is_empty() {
            continue;
        }
        writeln!(out, "\nonly in {side}:")?;
        for p in only {
            writeln!(
                out,
                "  {side}¶{:<3} “{}”",
                p.paragraph,
                shorten(&p.text, 120)
            )?;
        }
    }
    Ok(())
}

pub fn verified(out: &mut impl Write, v: &VerifyResult) -> Result<()> {
    writeln!(out, "store           {}", v.store)?;
    writeln!(out, "segments        {} checked", v.segments)?;
    writeln!(out, "compact copies  {} checked", v.compact_files)?;
    writeln!(out, "lexical indexes {} checked", v.lexical_indexes)?;
    writeln!(
        out,
        "bytes           {} in {:.2} s",
        v.bytes_checked, v.seconds
    )?;
    let verdict = if v.intact {
        "intact".to_string()
    } else {
        let mut parts = Vec::new();
        if !v.damaged_compact.is_empty() {
            parts.push(format!(
                "{} compact copies damaged",
                v.damaged_compact.len()
            ));
        }
        if !v.damaged_lexical.is_empty() {
            parts.push(format!(
                "{} lexical indexes damaged or missing",
                v.damaged_lexical.len()
            ));
        }
        parts.join(", ")
    };
    writeln!(out, "result          {verdict}")
}

pub fn info(out: &mut impl Write, info: &InfoResult) -> Result<()> {
    let m = &info.model;
    writeln!(out, "store       {}", info.store)?;
    writeln!(out, "articles    {}", info.articles)?;
    writeln!(
        out,
        "paragraphs  {} ({} chunks embedded)",
        info.paragraphs, info.chunks
    )?;
    writeln!(
        out,
        "model       {} (dim {}, {} pooling, max_seq_length {}, {}normalised)",
        m.name,
        m.dim,
        m.pooling,
        m.max_seq_length,
        if m.normalize { "" } else { "not " }
    )?;
    writeln!(out, "weights     sha256 {}", m.weights_sha256)?;
    writeln!(out, "precision   {}", info.precision)?;
    writeln!(
        out,
        "method      article vectors: {}",
        info.article_vectors.name()
    )?;
    if let Some(kind) = info.compact {
        writeln!(
            out,
            "compact     {kind} copies of the paragraph vectors ({})",
            human_bytes(info.compact_bytes)
        )?;
    }
    match (&info.lexical, info.lexical_missing) {
        (Some(analysis), 0) => writeln!(
            out,
            "lexical     {analysis} ({})",
            human_bytes(info.lexical_bytes)
        )?,
        (_, missing) => writeln!(
            out,
            "lexical     {missing} segment(s) without a usable lexical index: `likewise index` builds it"
        )?,
    }
    writeln!(
        out,
        "on disk     {} in {} segments",
        human_bytes(info.bytes_on_disk),
        info.segments
    )?;
    Ok(())
}

/// `likewise model list`: a row per known model.
pub fn models(out: &mut impl Write, models: &[crate::engine::KnownModelDoc]) -> Result<()> {
    writeln!(
        out,
        "{:<20} {:<11} {:>4} {:<9} {:>9} {:<10} {:<8} about",
        "model", "arch", "dim", "pooling", "weights", "licence", "here"
    )?;
    for m in models {
        writeln!(
            out,
            "{:<20} {:<11} {:>4} {:<9} {:>9} {:<10} {:<8} {}{}",
            m.short_name,
            m.architecture,
            m.dim,
            m.pooling,
            human_bytes(m.weights_bytes),
            m.licence,
            if m.present.is_some() { "yes" } else { "no" },
            m.summary,
            if m.default { " (default)" } else { "" }
        )?;
    }
    for m in models {
        writeln!(
            out,
            "{}: {}; {}",
            m.short_name,
            m.present
                .as_ref()
                .map(|p| format!("in {}", p.display()))
                .unwrap_or_else(|| format!("`likewise model fetch {}`", m.short_name)),
            m.sources.join(", then ")
        )?;
    }
    Ok(())
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

use crate::engine::follow::{AlertRecord, SavedSearch, StoriesList, StoryArticle, StoryTimeline};

fn story_article_line(a: &StoryArticle) -> String {
    format!(
        "{}  {}  {}{}",
        a.date
            .as_deref()
            .map_or("(undated)  ", |d| &d[..d.len().min(10)]),
        shorten(&a.key, 28),
        shorten(&a.title, 60),
        a.source
            .as_deref()
            .map(|s| format!("  — {}", shorten(s, 24)))
            .unwrap_or_default()
    )
}

/// `likewise stories`.
pub fn stories(out: &mut impl Write, list: &StoriesList) -> Result<()> {
    if list.stories.is_empty() {
        writeln!(out, "no stories of two or more articles")?;
    }
    for s in &list.stories {
        writeln!(
            out,
            "story {:<5} {:>4} articles  {}",
            s.id,
            s.size,
            shorten(&s.label, 80)
        )?;
        writeln!(out, "      keywords: {}", s.keywords.join(", "))?;
        writeln!(out, "      first: {}", story_article_line(&s.first))?;
        if s.size > 1 {
            writeln!(out, "      last:  {}", story_article_line(&s.last))?;
        }
        if !s.merged.is_empty() {
            let ids: Vec<String> = s.merged.iter().map(u64::to_string).collect();
            writeln!(out, "      merged into it: {}", ids.join(", "))?;
        }
    }
    writeln!(
        out,
        "{} articles are alone in their story",
        list.articles_alone
    )
}

/// `likewise story ID`.
pub fn story(out: &mut impl Write, t: &StoryTimeline) -> Result<()> {
    if t.asked != t.story.id {
        writeln!(
            out,
            "story {} was merged into story {}",
            t.asked, t.story.id
        )?;
    }
    writeln!(
        out,
        "story {}: {} articles  {}",
        t.story.id,
        t.story.size,
        shorten(&t.story.label, 80)
    )?;
    writeln!(out, "keywords: {}", t.story.keywords.join(", "))?;
    for (i, e) in t.timeline.iter().enumerate() {
        writeln!(
            out,
            "{} {}",
            if i == 0 { "first" } else { "  then" },
            story_article_line(&e.article)
        )?;
        for c in &e.copies {
            writeln!(out, "        copy: {}", story_article_line(c))?;
        }
        for p in e.adds.iter().take(3) {
            writeln!(out, "        adds: {}", shorten(p, 100))?;
        }
        if e.adds.len() > 3 {
            writeln!(out, "        adds {} more paragraphs", e.adds.len() - 3)?;
        }
    }
    Ok(())
}

/// `likewise alerts list`.
pub fn saved_searches(out: &mut impl Write, searches: &[SavedSearch]) -> Result<()> {
    if searches.is_empty() {
        writeln!(
            out,
            "no saved searches (`likewise alerts add NAME TEXT` saves one)"
        )?;
    }
    for s in searches {
        let q = &s.query;
        let mut what = Vec::new();
        if let Some(t) = q.text.as_deref().filter(|t| !t.is_empty()) {
            what.push(format!("{:?}", shorten(t, 60)));
        }
        if let Some(id) = s.story {
            what.push(format!("story {id}"));
        }
        writeln!(
            out,
            "{:<20} {}  ({}, {}{})",
            shorten(&s.name, 20),
            what.join(" in "),
            q.mode.name(),
            match q.level {
                Level::Article => "articles",
                Level::Paragraph => "paragraphs",
            },
            q.min_score
                .map(|m| format!(", from {m}"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

/// `likewise alerts show`.
pub fn alerts(out: &mut impl Write, alerts: &[AlertRecord]) -> Result<()> {
    if alerts.is_empty() {
        writeln!(out, "no alerts")?;
    }
    for a in alerts {
        writeln!(
            out,
            "{}  {:<16} {:.3}  {}  {}",
            &a.time[..a.time.len().min(19)],
            shorten(&a.search, 16),
            a.score,
            shorten(&a.key, 28),
            shorten(&a.title, 60)
        )?;
        if let Some(p) = &a.paragraph {
            writeln!(out, "      {}", shorten(p, 110))?;
        }
        if !a.copies.is_empty() {
            writeln!(
                out,
                "      {} copies: {}",
                a.copies.len(),
                shorten(&a.copies.join(", "), 100)
            )?;
        }
    }
    Ok(())
}

/// One line on stderr per `watch` event.
pub fn watch_event(event: &crate::watch::WatchEvent) {
    if let Some(line) = event.line() {
        eprintln!("likewise: {line}");
    }
}
