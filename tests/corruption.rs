//! Damaged stores and fuzzed inputs: truncation at many offsets and flipped bytes in every section
//! of the format must give a clear error naming the file (never a panic, a hang or silently wrong
//! results), and the decoders and the article parser must survive arbitrary bytes.
//!
//! The number of fuzz cases is `PROPTEST_CASES` (default 256 per property); run with e.g.
//! `PROPTEST_CASES=100000 cargo test --release --test corruption` for a long fuzzing session.

use likewise::index::{self, IndexOptions, Silent};
use likewise::model::fake::FakeEmbedder;
use likewise::model::Embedder;
use likewise::search::{self, SearchOptions};
use likewise::store::format;
use likewise::store::{Store, StoreError, Writer};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn build_store(dir: &Path) -> PathBuf {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for i in 0..12 {
        std::fs::write(
            input.join(format!("{i:02}.txt")),
            format!("Headline {i}\nFirst paragraph on theme{} item {i}.\nSecond paragraph, subject{}.\n", i % 4, i % 3),
        )
        .unwrap();
    }
    let store = dir.join("store");
    let fake = FakeEmbedder::new(24, 40);
    let mut w = Writer::open(&store, fake.identity(), "f32").unwrap();
    index::index(
        &mut w,
        &fake,
        &[input],
        &IndexOptions {
            group_articles: 100,
            ..Default::default()
        },
        &Silent,
    )
    .unwrap();
    store
}

fn segment_path(store: &Path) -> PathBuf {
    std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "lkw"))
        .unwrap()
}

/// What a search returns, to compare a store that opened after damage with the original.
fn fingerprint(store: &Store) -> Vec<(String, u32)> {
    let q = vec![1.0f32 / (24f32).sqrt(); 24];
    search::search_paragraphs(
        store,
        &q,
        &SearchOptions {
            k: 30,
            min_score: None,
            exclude: None,
            filter: None,
            compact: None,
        },
    )
    .iter()
    .map(|h| {
        (
            store.segments[h.loc.segment]
                .chunk_text(h.chunk)
                .to_string(),
            h.score.to_bits(),
        )
    })
    .collect()
}

enum Outcome {
    Error,
    Intact,
}

fn open_checked(store: &Path, damaged_file: &Path, expected: &[(String, u32)]) -> Outcome {
    match std::panic::catch_unwind(|| Store::open(store)) {
        Err(_) => panic!(
            "panic while opening a damaged store ({})",
            damaged_file.display()
        ),
        Ok(Err(StoreError::Corrupt { path, .. })) | Ok(Err(StoreError::Version { path, .. })) => {
            assert_eq!(path, damaged_file, "the error names the damaged file");
            Outcome::Error
        }
        Ok(Err(e)) => panic!("unexpected error kind: {e}"),
        Ok(Ok(s)) => {
            // Only bytes that carry nothing (padding) may be changed without an error.
            assert_eq!(
                fingerprint(&s),
                expected,
                "damage went unnoticed and changed results"
            );
            Outcome::Intact
        }
    }
}

#[test]
fn truncations_and_flipped_bytes_in_every_section_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = build_store(dir.path());
    let expected = fingerprint(&Store::open(&store).unwrap());
    let seg = segment_path(&store);
    let seg_bytes = std::fs::read(&seg).unwrap();
    let manifest = store.join("MANIFEST");
    let man_bytes = std::fs::read(&manifest).unwrap();
    let layout = format::decode_layout(&seg_bytes).unwrap();
    let sections = [
        ("header", 0..168),
        ("articles", layout.articles.clone()),
        ("chunks", layout.chunks.clone()),
        ("text", layout.text.clone()),
        ("chunk vectors", layout.chunk_vectors.clone()),
        ("article vectors", layout.article_vectors.clone()),
    ];
    let mut cases = 0;
    let mut errors = 0;
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    // Flips: 120 in each section of the segment.
    for (name, range) in &sections {
        let mut section_errors = 0;
        for _ in 0..120 {
            let mut bad = seg_bytes.clone();
            let at = range.start + next(range.len());
            bad[at] ^= 1 << next(8);
            std::fs::write(&seg, &bad).unwrap();
            cases += 1;
            if let Outcome::Error = open_checked(&store, &seg, &expected) {
                errors += 1;
                section_errors += 1;
            }
        }
        let reserved_bytes = if *name == "header" { 12 } else { 0 };
        assert!(
            section_errors >= 120 - reserved_bytes * 2,
            "{name}: only {section_errors} of 120 flips detected"
        );
    }
    // Truncations of the segment at 250 offsets.
    for i in 0..250 {
        let cut = i * seg_bytes.len() / 250;
        std::fs::write(&seg, &seg_bytes[..cut]).unwrap();
        cases += 1;
        assert!(
            matches!(open_checked(&store, &seg, &expected), Outcome::Error),
            "cut at {cut}"
        );
        errors += 1;
    }
    std::fs::write(&seg, &seg_bytes).unwrap();
    // The manifest: every truncation and 150 flips.
    for cut in 0..man_bytes.len() {
        std::fs::write(&manifest, &man_bytes[..cut]).unwrap();
        cases += 1;
        match std::panic::catch_unwind(|| Store::open(&store)) {
            Ok(Err(StoreError::Corrupt { path, .. }))
            | Ok(Err(StoreError::Version { path, .. })) => assert_eq!(path, manifest),
            Ok(Err(StoreError::NotFound { .. })) => unreachable!("the manifest exists"),
            other => panic!(
                "cut {cut}: {:?}",
                other.map(|r| r.map(|s| s.article_count()))
            ),
        }
        errors += 1;
    }
    for _ in 0..150 {
        let mut bad = man_bytes.clone();
        let at = next(bad.len());
        bad[at] ^= 1 << next(8);
        std::fs::write(&manifest, &bad).unwrap();
        cases += 1;
        if let Outcome::Error = open_checked(&store, &manifest, &expected) {
            errors += 1;
        }
    }
    std::fs::write(&manifest, &man_bytes).unwrap();
    eprintln!("{cases} damaged stores, {errors} clear errors, the rest intact (padding)");
    assert!(cases >= 1000);
}

proptest! {
    #[test]
    fn the_segment_decoder_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = format::decode_segment(&bytes);
        let _ = format::decode_manifest(&bytes);
    }

    #[test]
    fn the_segment_decoder_survives_mutations_of_a_valid_segment(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let seg = valid_segment();
        let mut bytes = seg.clone();
        for (at, x) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        let bytes = &bytes[..cut.index(bytes.len() + 1)];
        if let Ok(decoded) = format::decode_segment(bytes) {
            // Whatever decodes must be what was written (the flips hit padding only).
            prop_assert_eq!(decoded, format::decode_segment(&seg).unwrap());
        }
    }

    #[test]
    fn the_segment_decoder_survives_mutations_behind_valid_checksums(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        // Checksums are recomputed after the damage, so the structural checks behind them (counts,
        // bounds, JSON, UTF-8, chunk and article ranges) are what must hold.
        let mut bytes = valid_segment();
        for (at, x) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        reseal(&mut bytes);
        let _ = format::decode_segment(&bytes);
    }

    #[test]
    fn the_article_parser_survives_arbitrary_text(text in "\\PC*(\n\\PC*){0,20}") {
        let parsed = likewise::text::parse_article_text(&text);
        let mut seen = std::collections::HashSet::new();
        for p in &parsed.paragraphs {
            prop_assert!(!p.trim().is_empty());
            prop_assert!(seen.insert(p.to_lowercase()), "paragraphs are unique");
        }
    }

    #[test]
    fn the_article_parser_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let (text, _) = likewise::text::decode_text(&bytes);
        let _ = likewise::text::parse_article_text(&text);
    }
}

/// Recomputes every section CRC and the header CRC of a (damaged) segment, where the section
/// table still points inside the buffer.
fn reseal(bytes: &mut [u8]) {
    if bytes.len() < 168 {
        return;
    }
    for i in 0..5 {
        let at = 40 + i * 24;
        let offset = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        let len = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap()) as usize;
        if let Some(section) = offset
            .checked_add(len)
            .filter(|&end| end <= bytes.len())
            .map(|end| &bytes[offset..end])
        {
            let crc = crc32fast::hash(section);
            bytes[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&bytes[..160]);
    bytes[160..164].copy_from_slice(&crc.to_le_bytes());
}

fn valid_segment() -> Vec<u8> {
    use std::sync::OnceLock;
    static SEG: OnceLock<Vec<u8>> = OnceLock::new();
    SEG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = build_store(dir.path());
        std::fs::read(segment_path(&store)).unwrap()
    })
    .clone()
}
