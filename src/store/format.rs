//! The byte layout of a segment file and of the manifest: pure encode and decode, no I/O, so both
//! can be property-tested and fuzzed. FORMAT.md documents the same layout as a table.
//!
//! Invariants checked by `decode_segment` before anything is trusted: the magic and version, a
//! header CRC, every section lying inside the buffer and 64-byte aligned where vectors live, every
//! section's CRC, section sizes that agree with the counts (`n_chunks × dim × 4` bytes of chunk
//! vectors…), and every chunk pointing at an existing article and a valid UTF-8 text range.
//! A size is never used to allocate before it has been checked against the real buffer length.

use crate::text::Metadata;
use serde::{Deserialize, Serialize};

pub const SEGMENT_MAGIC: &[u8; 8] = b"LKWSEG\x00\x01";
pub const MANIFEST_MAGIC: &str = "likewise-manifest";
/// Version of the segment and manifest layout. A reader refuses other versions with advice.
pub const FORMAT_VERSION: u32 = 1;

const SECTIONS: usize = 5;
const HEADER_LEN: usize = 40 + SECTIONS * 24 + 8; // fixed fields, section table, header CRC + pad
/// Sections start on 64-byte boundaries so vectors can be read in place from a memory map.
pub const ALIGN: usize = 64;
pub const CHUNK_RECORD_LEN: usize = 24;

/// One article as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArticleRecord {
    /// The article's identity: its path (as indexed) or its JSONL `id`.
    pub key: String,
    /// The file it came from, when it came from a file (absolute), for change detection and pruning.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file: Option<String>,
    pub title: String,
    #[serde(default)]
    pub meta: Metadata,
    /// sha256 of the content the article was parsed from.
    pub content_hash: String,
    /// First chunk of the article in this segment, and how many it has.
    pub chunk_start: u64,
    pub chunk_count: u32,
    /// Number of paragraphs (a paragraph over the model's window has several chunks).
    pub paragraphs: u32,
}

/// One embedded piece of text: a paragraph, or a window of a paragraph too long for the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRecord {
    /// Index of its article within the segment.
    pub article: u32,
    /// 0-based paragraph position within the article.
    pub paragraph: u32,
    /// 0-based window within the paragraph.
    pub window: u32,
    pub text_start: u64,
    pub text_len: u32,
}

/// A segment's content in memory, as built by the indexer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentData {
    pub dim: usize,
    pub articles: Vec<ArticleRecord>,
    pub chunks: Vec<ChunkRecord>,
    pub text: String,
    pub chunk_vectors: Vec<f32>,
    pub article_vectors: Vec<f32>,
}

/// Where each section lies in a segment buffer; offsets are from the buffer's start.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentLayout {
    pub dim: usize,
    pub n_articles: usize,
    pub n_chunks: usize,
    pub articles: std::ops::Range<usize>,
    pub chunks: std::ops::Range<usize>,
    pub text: std::ops::Range<usize>,
    pub chunk_vectors: std::ops::Range<usize>,
    pub article_vectors: std::ops::Range<usize>,
}

/// Why a buffer is not a valid segment or manifest.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    #[error("not a likewise segment (bad magic)")]
    Magic,
    #[error("format version {found}, this likewise reads version {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("truncated: {needed} bytes needed, {len} present")]
    Truncated { needed: u64, len: u64 },
    #[error("checksum mismatch in {0}")]
    Checksum(&'static str),
    #[error("inconsistent {0}")]
    Inconsistent(String),
}

fn align_up(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}
fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}
fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Lays out a file of the two kinds this module writes: `fixed` (the 40 bytes of magic, version
/// and counts), a table of `offset u64, length u64, crc32 u32, reserved u32` per section, a CRC of
/// all that, then each section at a multiple of [`ALIGN`], zero-padded to the end.
fn encode_sections(fixed: Vec<u8>, bodies: &[&[u8]]) -> Vec<u8> {
    debug_assert_eq!(fixed.len(), 40);
    let header_len = 40 + bodies.len() * 24 + 8;
    let mut offsets = Vec::with_capacity(bodies.len());
    let mut at = align_up(header_len);
    for body in bodies {
        offsets.push(at);
        at = align_up(at + body.len());
    }
    let mut out = fixed;
    out.reserve(at);
    for (body, &offset) in bodies.iter().zip(&offsets) {
        put_u64(&mut out, offset as u64);
        put_u64(&mut out, body.len() as u64);
        put_u32(&mut out, crc32(body));
        put_u32(&mut out, 0);
    }
    let header_crc = crc32fast::hash(&out);
    put_u32(&mut out, header_crc);
    put_u32(&mut out, 0);
    for (body, &offset) in bodies.iter().zip(&offsets) {
        out.resize(offset, 0);
        out.extend_from_slice(body);
    }
    out.resize(at, 0);
    out
}

/// Reads and checks the section table of a buffer laid out by [`encode_sections`] whose header
/// (of `header_len` bytes) was checked: every section inside the buffer and aligned, and the
/// buffer ending right after the last one's padding.
fn decode_sections(
    buf: &[u8],
    count: usize,
    header_len: usize,
) -> Result<Vec<std::ops::Range<usize>>, FormatError> {
    let len = buf.len() as u64;
    let mut ranges = Vec::with_capacity(count);
    for i in 0..count {
        let at = 40 + i * 24;
        let offset = get_u64(buf, at);
        let size = get_u64(buf, at + 8);
        let end = offset
            .checked_add(size)
            .ok_or_else(|| FormatError::Inconsistent("section bounds".into()))?;
        if end > len {
            return Err(FormatError::Truncated { needed: end, len });
        }
        if !offset.is_multiple_of(ALIGN as u64) || offset < header_len as u64 {
            return Err(FormatError::Inconsistent(format!("section {i} offset")));
        }
        ranges.push(offset as usize..end as usize);
    }
    // The file ends right after the last section's padding; anything shorter or longer is damage.
    let end = align_up(ranges.iter().map(|r| r.end).max().unwrap_or(header_len));
    if end as u64 != len {
        return Err(if (end as u64) > len {
            FormatError::Truncated {
                needed: end as u64,
                len,
            }
        } else {
            FormatError::Inconsistent(format!("{} bytes after the last section", len - end as u64))
        });
    }
    Ok(ranges)
}

/// The stored CRC of section `i`.
fn section_crc(buf: &[u8], i: usize) -> u32 {
    get_u32(buf, 40 + i * 24 + 16)
}

/// Encodes a segment. The bytes are what goes to disk, whole.
pub fn encode_segment(seg: &SegmentData) -> Vec<u8> {
    let articles = serde_json::to_vec(&seg.articles).expect("records serialise");
    let mut chunks = Vec::with_capacity(seg.chunks.len() * CHUNK_RECORD_LEN);
    for c in &seg.chunks {
        put_u32(&mut chunks, c.article);
        put_u32(&mut chunks, c.paragraph);
        put_u32(&mut chunks, c.window);
        put_u32(&mut chunks, c.text_len);
        put_u64(&mut chunks, c.text_start);
    }
    let bodies: [&[u8]; SECTIONS] = [
        &articles,
        &chunks,
        seg.text.as_bytes(),
        bytemuck::cast_slice(&seg.chunk_vectors),
        bytemuck::cast_slice(&seg.article_vectors),
    ];
    let mut fixed = Vec::with_capacity(40);
    fixed.extend_from_slice(SEGMENT_MAGIC);
    put_u32(&mut fixed, FORMAT_VERSION);
    put_u32(&mut fixed, seg.dim as u32);
    put_u64(&mut fixed, seg.articles.len() as u64);
    put_u64(&mut fixed, seg.chunks.len() as u64);
    put_u32(&mut fixed, SECTIONS as u32);
    put_u32(&mut fixed, 0);
    let out = encode_sections(fixed, &bodies);
    debug_assert!(out.len() >= HEADER_LEN);
    out
}

/// Checks a segment buffer's header and section table, without reading the sections.
pub fn decode_layout(buf: &[u8]) -> Result<SegmentLayout, FormatError> {
    let len = buf.len() as u64;
    if buf.len() < 12 {
        return Err(FormatError::Truncated {
            needed: HEADER_LEN as u64,
            len,
        });
    }
    if &buf[..8] != SEGMENT_MAGIC {
        return Err(FormatError::Magic);
    }
    let version = get_u32(buf, 8);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version { found: version });
    }
    if buf.len() < HEADER_LEN {
        return Err(FormatError::Truncated {
            needed: HEADER_LEN as u64,
            len,
        });
    }
    let crc_at = HEADER_LEN - 8;
    if crc32fast::hash(&buf[..crc_at]) != get_u32(buf, crc_at) {
        return Err(FormatError::Checksum("the header"));
    }
    let dim = get_u32(buf, 12) as usize;
    let n_articles = get_u64(buf, 16);
    let n_chunks = get_u64(buf, 24);
    if get_u32(buf, 32) as usize != SECTIONS {
        return Err(FormatError::Inconsistent("section count".into()));
    }
    if dim == 0 || dim > 65536 {
        return Err(FormatError::Inconsistent(format!("dimension {dim}")));
    }
    let ranges = decode_sections(buf, SECTIONS, HEADER_LEN)?;
    // Counts must agree with the section sizes (checked with u128 so nothing overflows).
    let expect = |what: &str, got: usize, want: u128| -> Result<(), FormatError> {
        if got as u128 != want {
            return Err(FormatError::Inconsistent(format!(
                "{what}: {got} bytes, the counts imply {want}"
            )));
        }
        Ok(())
    };
    expect(
        "chunk table",
        ranges[1].len(),
        n_chunks as u128 * CHUNK_RECORD_LEN as u128,
    )?;
    expect(
        "chunk vectors",
        ranges[3].len(),
        n_chunks as u128 * dim as u128 * 4,
    )?;
    expect(
        "article vectors",
        ranges[4].len(),
        n_articles as u128 * dim as u128 * 4,
    )?;
    Ok(SegmentLayout {
        dim,
        n_articles: n_articles as usize,
        n_chunks: n_chunks as usize,
        articles: ranges[0].clone(),
        chunks: ranges[1].clone(),
        text: ranges[2].clone(),
        chunk_vectors: ranges[3].clone(),
        article_vectors: ranges[4].clone(),
    })
}

const SECTION_NAMES: [&str; SECTIONS] = [
    "the article table",
    "the chunk table",
    "the text",
    "the chunk vectors",
    "the article vectors",
];

/// Verifies the CRC of every section of a buffer whose layout was decoded.
pub fn verify_sections(buf: &[u8], layout: &SegmentLayout) -> Result<(), FormatError> {
    let mut everything = usize::MAX;
    verify_sections_within(buf, layout, &mut everything)
}

/// Verifies the CRC of the article and chunk tables, and of the text and vector sections that
/// fit in what is left of `budget` bytes (each one checked is taken from it).
pub fn verify_sections_within(
    buf: &[u8],
    layout: &SegmentLayout,
    budget: &mut usize,
) -> Result<(), FormatError> {
    let ranges = [
        &layout.articles,
        &layout.chunks,
        &layout.text,
        &layout.chunk_vectors,
        &layout.article_vectors,
    ];
    for (i, r) in ranges.iter().enumerate() {
        // The article and chunk tables are decoded whatever happens: always checked.
        if i >= 2 {
            if r.len() > *budget {
                continue;
            }
            *budget -= r.len();
        }
        let stored = section_crc(buf, i);
        if crc32(&buf[(*r).clone()]) != stored {
            return Err(FormatError::Checksum(SECTION_NAMES[i]));
        }
    }
    Ok(())
}

/// CRC-32 (IEEE) of `bytes`, computed in 8 MiB pieces on all threads and combined.
pub fn crc32(bytes: &[u8]) -> u32 {
    use rayon::prelude::*;
    const PIECE: usize = 8 << 20;
    if bytes.len() <= PIECE {
        return crc32fast::hash(bytes);
    }
    let pieces: Vec<crc32fast::Hasher> = bytes
        .par_chunks(PIECE)
        .map(|p| {
            let mut h = crc32fast::Hasher::new();
            h.update(p);
            h
        })
        .collect();
    let mut total = crc32fast::Hasher::new();
    for p in &pieces {
        total.combine(p);
    }
    total.finalize()
}

/// Reads chunk record `i` of a buffer whose layout was decoded (`i < layout.n_chunks`).
pub fn read_chunk(buf: &[u8], layout: &SegmentLayout, i: usize) -> ChunkRecord {
    let at = layout.chunks.start + i * CHUNK_RECORD_LEN;
    ChunkRecord {
        article: get_u32(buf, at),
        paragraph: get_u32(buf, at + 4),
        window: get_u32(buf, at + 8),
        text_len: get_u32(buf, at + 12),
        text_start: get_u64(buf, at + 16),
    }
}

/// Decodes the article table and checks every chunk record against it and the text section,
/// without copying the chunk table (a store of millions of paragraphs is opened in place).
pub fn decode_articles(
    buf: &[u8],
    layout: &SegmentLayout,
) -> Result<Vec<ArticleRecord>, FormatError> {
    let articles: Vec<ArticleRecord> = serde_json::from_slice(&buf[layout.articles.clone()])
        .map_err(|e| FormatError::Inconsistent(format!("article table: {e}")))?;
    if articles.len() != layout.n_articles {
        return Err(FormatError::Inconsistent("article count".into()));
    }
    let text_len = layout.text.len() as u64;
    for i in 0..layout.n_chunks {
        let c = read_chunk(buf, layout, i);
        let end = c.text_start.checked_add(c.text_len as u64);
        if c.article as usize >= articles.len() || end.is_none_or(|e| e > text_len) {
            return Err(FormatError::Inconsistent(format!(
                "chunk {i} points outside the segment"
            )));
        }
    }
    for (i, a) in articles.iter().enumerate() {
        let end = a.chunk_start.checked_add(a.chunk_count as u64);
        if end.is_none_or(|e| e > layout.n_chunks as u64)
            || (a.chunk_start..a.chunk_start + a.chunk_count as u64)
                .any(|c| read_chunk(buf, layout, c as usize).article as usize != i)
        {
            return Err(FormatError::Inconsistent(format!(
                "article {i} chunk range"
            )));
        }
    }
    Ok(articles)
}

/// Decodes the article and chunk tables of a verified buffer and checks that they agree.
pub fn decode_tables(
    buf: &[u8],
    layout: &SegmentLayout,
) -> Result<(Vec<ArticleRecord>, Vec<ChunkRecord>), FormatError> {
    let articles: Vec<ArticleRecord> = serde_json::from_slice(&buf[layout.articles.clone()])
        .map_err(|e| FormatError::Inconsistent(format!("article table: {e}")))?;
    if articles.len() != layout.n_articles {
        return Err(FormatError::Inconsistent("article count".into()));
    }
    let table = &buf[layout.chunks.clone()];
    let text_len = layout.text.len() as u64;
    let text = &buf[layout.text.clone()];
    let mut chunks = Vec::with_capacity(layout.n_chunks);
    for i in 0..layout.n_chunks {
        let at = i * CHUNK_RECORD_LEN;
        let c = ChunkRecord {
            article: get_u32(table, at),
            paragraph: get_u32(table, at + 4),
            window: get_u32(table, at + 8),
            text_len: get_u32(table, at + 12),
            text_start: get_u64(table, at + 16),
        };
        let end = c.text_start.checked_add(c.text_len as u64);
        if c.article as usize >= articles.len() || end.is_none_or(|e| e > text_len) {
            return Err(FormatError::Inconsistent(format!(
                "chunk {i} points outside the segment"
            )));
        }
        let (s, e) = (
            c.text_start as usize,
            c.text_start as usize + c.text_len as usize,
        );
        if std::str::from_utf8(&text[s..e]).is_err() {
            return Err(FormatError::Inconsistent(format!(
                "chunk {i} text is not UTF-8"
            )));
        }
        chunks.push(c);
    }
    for (i, a) in articles.iter().enumerate() {
        let end = a.chunk_start.checked_add(a.chunk_count as u64);
        if end.is_none_or(|e| e > chunks.len() as u64)
            || chunks[a.chunk_start as usize..(a.chunk_start + a.chunk_count as u64) as usize]
                .iter()
                .any(|c| c.article as usize != i)
        {
            return Err(FormatError::Inconsistent(format!(
                "article {i} chunk range"
            )));
        }
    }
    Ok((articles, chunks))
}

/// Decodes a whole segment buffer into owned data (tests, compaction).
pub fn decode_segment(buf: &[u8]) -> Result<SegmentData, FormatError> {
    let layout = decode_layout(buf)?;
    verify_sections(buf, &layout)?;
    let (articles, chunks) = decode_tables(buf, &layout)?;
    let floats = |r: &std::ops::Range<usize>| -> Vec<f32> {
        buf[r.clone()]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect()
    };
    Ok(SegmentData {
        dim: layout.dim,
        articles,
        chunks,
        text: std::str::from_utf8(&buf[layout.text.clone()])
            .map_err(|_| FormatError::Inconsistent("text is not UTF-8".into()))?
            .to_string(),
        chunk_vectors: floats(&layout.chunk_vectors),
        article_vectors: floats(&layout.article_vectors),
    })
}

/// Wraps a manifest's JSON body in its header line and checksum line.
pub fn encode_manifest(json: &[u8]) -> Vec<u8> {
    let mut out = format!("{MANIFEST_MAGIC} {FORMAT_VERSION}\n").into_bytes();
    out.extend_from_slice(json);
    out.extend_from_slice(format!("\ncrc32 {:08x}\n", crc32fast::hash(json)).as_bytes());
    out
}

/// Checks a manifest's header and checksum and returns its JSON body.
pub fn decode_manifest(buf: &[u8]) -> Result<&[u8], FormatError> {
    let header_end = buf
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(FormatError::Magic)?;
    let header = std::str::from_utf8(&buf[..header_end]).map_err(|_| FormatError::Magic)?;
    let version = header
        .strip_prefix(MANIFEST_MAGIC)
        .map(str::trim)
        .ok_or(FormatError::Magic)?;
    let version: u32 = version.parse().map_err(|_| FormatError::Magic)?;
    if version != FORMAT_VERSION {
        return Err(FormatError::Version { found: version });
    }
    let rest = &buf[header_end + 1..];
    let trailer_len = "\ncrc32 00000000\n".len();
    if rest.len() < trailer_len {
        return Err(FormatError::Truncated {
            needed: (header_end + 1 + trailer_len) as u64,
            len: buf.len() as u64,
        });
    }
    let (json, trailer) = rest.split_at(rest.len() - trailer_len);
    let trailer =
        std::str::from_utf8(trailer).map_err(|_| FormatError::Checksum("the manifest"))?;
    let stored = trailer
        .trim()
        .strip_prefix("crc32 ")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or(FormatError::Checksum("the manifest"))?;
    if crc32fast::hash(json) != stored {
        return Err(FormatError::Checksum("the manifest"));
    }
    Ok(json)
}

/// Magic of a compact-vectors file (`.lkc`), the int8 / 1-bit copies of one segment's vectors.
pub const COMPACT_MAGIC: &[u8; 8] = b"LKWCMP\x00\x01";
const COMPACT_SECTIONS: usize = 3;
const COMPACT_HEADER_LEN: usize = 40 + COMPACT_SECTIONS * 24 + 8;

/// The CRC of a segment's chunk-vector section, as its header records it: a compact file names
/// the vectors it was made from by this value.
pub fn chunk_vectors_crc(segment: &[u8]) -> u32 {
    section_crc(segment, 3)
}

/// Where a compact file's sections lie.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactLayout {
    pub kind: crate::compact::Compact,
    pub dim: usize,
    pub n_chunks: usize,
    /// CRC of the segment's chunk vectors these copies were made from.
    pub source_crc: u32,
    pub int8: std::ops::Range<usize>,
    pub scales: std::ops::Range<usize>,
    pub bits: std::ops::Range<usize>,
}

/// Encodes the compact copies of a segment whose chunk vectors have CRC `source_crc`.
pub fn encode_compact(
    kind: crate::compact::Compact,
    dim: usize,
    source_crc: u32,
    data: &crate::compact::CompactData,
) -> Vec<u8> {
    let bodies: [&[u8]; COMPACT_SECTIONS] = [
        &data.int8,
        bytemuck::cast_slice(&data.scales),
        bytemuck::cast_slice(&data.bits),
    ];
    let mut fixed = Vec::with_capacity(40);
    fixed.extend_from_slice(COMPACT_MAGIC);
    put_u32(&mut fixed, FORMAT_VERSION);
    put_u32(&mut fixed, if kind.has_bits() { 2 } else { 1 });
    put_u32(&mut fixed, dim as u32);
    put_u32(&mut fixed, 0);
    put_u64(&mut fixed, data.scales.len() as u64);
    put_u32(&mut fixed, source_crc);
    put_u32(&mut fixed, 0);
    encode_sections(fixed, &bodies)
}

/// Checks a compact file's header, section table and sizes, and the CRC of sections no larger
/// than `verify_up_to` bytes.
pub fn decode_compact(buf: &[u8], budget: &mut usize) -> Result<CompactLayout, FormatError> {
    use crate::compact::{words_per_row, Compact};
    let len = buf.len() as u64;
    if buf.len() < COMPACT_HEADER_LEN {
        return Err(FormatError::Truncated {
            needed: COMPACT_HEADER_LEN as u64,
            len,
        });
    }
    if &buf[..8] != COMPACT_MAGIC {
        return Err(FormatError::Magic);
    }
    let version = get_u32(buf, 8);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version { found: version });
    }
    let crc_at = COMPACT_HEADER_LEN - 8;
    if crc32fast::hash(&buf[..crc_at]) != get_u32(buf, crc_at) {
        return Err(FormatError::Checksum("the header"));
    }
    let kind = match get_u32(buf, 12) {
        1 => Compact::Int8,
        2 => Compact::Binary,
        other => return Err(FormatError::Inconsistent(format!("compact kind {other}"))),
    };
    let dim = get_u32(buf, 16) as usize;
    let n = get_u64(buf, 24);
    if dim == 0 || dim > 65536 {
        return Err(FormatError::Inconsistent(format!("dimension {dim}")));
    }
    let ranges = decode_sections(buf, COMPACT_SECTIONS, COMPACT_HEADER_LEN)?;
    let words = if kind.has_bits() {
        words_per_row(dim) as u128
    } else {
        0
    };
    let want = [
        n as u128 * dim as u128,
        n as u128 * 4,
        n as u128 * words * 8,
    ];
    for (i, w) in want.iter().enumerate() {
        if ranges[i].len() as u128 != *w {
            return Err(FormatError::Inconsistent(format!(
                "compact section {i}: {} bytes, the counts imply {w}",
                ranges[i].len()
            )));
        }
    }
    const NAMES: [&str; COMPACT_SECTIONS] = ["the int8 vectors", "the scales", "the sign bits"];
    for (i, r) in ranges.iter().enumerate() {
        if r.len() > *budget {
            continue;
        }
        *budget -= r.len();
        if crc32(&buf[r.clone()]) != section_crc(buf, i) {
            return Err(FormatError::Checksum(NAMES[i]));
        }
    }
    Ok(CompactLayout {
        kind,
        dim,
        n_chunks: n as usize,
        source_crc: get_u32(buf, 32),
        int8: ranges[0].clone(),
        scales: ranges[1].clone(),
        bits: ranges[2].clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentData {
        let text = "first paragraphsecond".to_string();
        SegmentData {
            dim: 2,
            articles: vec![ArticleRecord {
                key: "a.txt".into(),
                file: None,
                title: "A".into(),
                meta: Metadata::default(),
                content_hash: "h".into(),
                chunk_start: 0,
                chunk_count: 2,
                paragraphs: 2,
            }],
            chunks: vec![
                ChunkRecord {
                    article: 0,
                    paragraph: 0,
                    window: 0,
                    text_start: 0,
                    text_len: 15,
                },
                ChunkRecord {
                    article: 0,
                    paragraph: 1,
                    window: 0,
                    text_start: 15,
                    text_len: 6,
                },
            ],
            text,
            chunk_vectors: vec![1.0, 0.0, 0.0, 1.0],
            article_vectors: vec![0.6, 0.8],
        }
    }

    #[test]
    fn segment_round_trips() {
        let seg = sample();
        let bytes = encode_segment(&seg);
        assert_eq!(bytes.len() % ALIGN, 0);
        assert_eq!(decode_segment(&bytes).unwrap(), seg);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode_segment(&sample());
        for cut in 0..bytes.len() {
            assert!(decode_segment(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encode_segment(&sample());
        let layout = decode_layout(&bytes).unwrap();
        // Padding between sections carries no information; every other byte is covered.
        let covered = |i: usize| {
            i < HEADER_LEN - 4
                || [
                    &layout.articles,
                    &layout.chunks,
                    &layout.text,
                    &layout.chunk_vectors,
                    &layout.article_vectors,
                ]
                .iter()
                .any(|r| r.contains(&i))
        };
        for i in (0..bytes.len()).filter(|&i| covered(i)) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode_segment(&bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn manifest_round_trips_and_detects_damage() {
        let body = br#"{"x":1}"#;
        let bytes = encode_manifest(body);
        assert_eq!(decode_manifest(&bytes).unwrap(), body);
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(decode_manifest(&bad).is_err());
        assert!(decode_manifest(&bytes[..bytes.len() - 3]).is_err());
    }

    fn compact_sample() -> (Vec<u8>, crate::compact::CompactData) {
        let dim = 8;
        let vectors: Vec<f32> = (0..dim * 5)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
            .collect();
        let data = crate::compact::quantize(&vectors, dim, crate::compact::Compact::Binary);
        (
            encode_compact(crate::compact::Compact::Binary, dim, 0xDEAD_BEEF, &data),
            data,
        )
    }

    #[test]
    fn compact_file_round_trips() {
        let (bytes, data) = compact_sample();
        let layout = decode_compact(&bytes, &mut { usize::MAX }).unwrap();
        assert_eq!(
            (layout.kind, layout.dim, layout.n_chunks, layout.source_crc),
            (crate::compact::Compact::Binary, 8, 5, 0xDEAD_BEEF)
        );
        assert_eq!(&bytes[layout.int8.clone()], &data.int8[..]);
        assert_eq!(
            &bytes[layout.bits.clone()],
            bytemuck::cast_slice::<u64, u8>(&data.bits)
        );
    }

    #[test]
    fn every_damage_to_a_compact_file_is_detected() {
        let (bytes, _) = compact_sample();
        let layout = decode_compact(&bytes, &mut { usize::MAX }).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                decode_compact(&bytes[..cut], &mut { usize::MAX }).is_err(),
                "cut at {cut}"
            );
        }
        let covered = |i: usize| {
            i < COMPACT_HEADER_LEN - 4
                || [&layout.int8, &layout.scales, &layout.bits]
                    .iter()
                    .any(|r| r.contains(&i))
        };
        for i in (0..bytes.len()).filter(|&i| covered(i)) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                decode_compact(&bad, &mut { usize::MAX }).is_err(),
                "flip at {i}"
            );
        }
    }
}
