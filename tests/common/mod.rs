//! Shared helpers of the integration tests: the real model (fetched when missing, never skipped),
//! temp stores, and the `likewise` binary.
#![allow(dead_code)]

use likewise::model::fetch::{self, DEFAULT_MODEL};
use likewise::model::{ModelFolder, SentenceEncoder};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The project root; integration tests run with it as the working directory.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The default model's folder, fetched (and verified) when missing. Test binaries may run at the
/// same time, so fetching holds a file lock.
pub fn model_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::set_current_dir(root()).expect("project root");
        let lock = std::fs::File::create(root().join("models/.fetch.lock")).expect("lock file");
        lock.lock().expect("fetch lock");
        let dir = fetch::fetch_model(DEFAULT_MODEL, false).unwrap_or_else(|e| {
            panic!("the tests need the real model and could not fetch it: {e}")
        });
        ModelFolder::open(&dir, DEFAULT_MODEL).unwrap_or_else(|e| panic!("{e}"));
        root().join(dir)
    })
    .clone()
}

pub fn model_folder() -> ModelFolder {
    ModelFolder::open(&model_dir(), DEFAULT_MODEL).expect("model folder")
}

pub fn encoder() -> &'static SentenceEncoder {
    static ENC: OnceLock<SentenceEncoder> = OnceLock::new();
    ENC.get_or_init(|| SentenceEncoder::load(&model_folder()).expect("model loads"))
}

/// The fast (bf16) encoder of the real model.
pub fn fast_encoder() -> &'static SentenceEncoder {
    static ENC: OnceLock<SentenceEncoder> = OnceLock::new();
    ENC.get_or_init(|| {
        SentenceEncoder::load_with(&model_folder(), likewise::model::Precision::Bf16)
            .expect("the bf16 encoder loads (AVX2 at least)")
    })
}

pub fn seeds() -> PathBuf {
    root().join("seeds")
}

/// `likewise` with the real model and a store in `dir`.
pub fn likewise(store: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("likewise").expect("binary");
    cmd.env("LIKEWISE_MODEL", model_dir())
        .env("LIKEWISE_INDEX", store)
        .env_remove("RAYON_NUM_THREADS")
        .current_dir(root());
    cmd
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Runs `cmd`, checks that it exits with `code`, and returns its standard error.
pub fn stderr_with_code(cmd: &mut assert_cmd::Command, code: i32) -> String {
    let out = cmd.assert().code(code).get_output().stderr.clone();
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `cmd`, checks that it succeeds, and returns its standard output.
pub fn stdout_of(cmd: &mut assert_cmd::Command) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).expect("UTF-8 on stdout")
}

/// A model folder `dir` holding copies of the real model's configuration files (no tokenizer,
/// no weights): the start of every damaged-model test.
pub fn copy_model_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let real = model_dir();
    for f in [
        "config.json",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
    ] {
        std::fs::copy(real.join(f), dir.join(f)).unwrap();
    }
    dir.to_path_buf()
}

/// Runs `cmd`, checks that it succeeds, and parses each line of its output as JSON.
pub fn jsonl_of(cmd: &mut assert_cmd::Command) -> Vec<serde_json::Value> {
    stdout_of(cmd)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The seeds indexed into `store/` of a fresh temporary folder.
pub fn indexed_seeds() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    likewise(&dir.path().join("store"))
        .args(["index", "seeds"])
        .assert()
        .success();
    dir
}

/// Copies a folder and everything under it (a store with its segments' lexical indexes, a model
/// folder, the seeds).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
