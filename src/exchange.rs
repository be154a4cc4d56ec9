//! Vectors in and out: the store's articles or paragraphs as Parquet (arrow-rs), NumPy `.npy`
//! (with a JSON of ids) or JSON lines, and Parquet files of articles — with or without vectors —
//! read back for indexing.
//!
//! A Parquet file of ours carries the model's identity, the precision, the level and how the
//! article vectors were made in its key-value metadata (`likewise.model`, `likewise.precision`,
//! `likewise.level`, `likewise.article_vectors`); its vectors are fixed-size lists of float32. Readers also take the plain lists of float (or double) that
//! Spark, pandas and DuckDB write.
//!
//! Columns: `id` (the article's key, always), `file` (the stored file name, when it came from a
//! file), `path` (that file as shown), `title`, `date`, `source`, `url`, `credit`,
//! `content_hash`; at paragraph level `paragraph` and `window`, and `article_vector` on each
//! article's first row (so a store can be rebuilt without embedding anything); `text` with
//! `--with-text` (always at paragraph level, which needs it to be read back); `vector`.

use crate::model::ModelIdentity;
use crate::store::Level;
use crate::store::Store;
use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, StringBuilder, UInt32Builder};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, LargeListArray, ListArray,
    RecordBatch, StringArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema};
use std::path::Path;
use std::sync::Arc;

/// What went wrong reading or writing an exchange file, with the file named.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ExchangeError {
    pub path: String,
    pub reason: String,
}

fn err(path: &Path, reason: impl std::fmt::Display) -> ExchangeError {
    ExchangeError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The file formats of `likewise export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Parquet,
    Npy,
    Jsonl,
}

/// One row of an export: an article, or a paragraph window.
struct Row<'s> {
    key: &'s str,
    file: Option<&'s str>,
    path: Option<String>,
    title: &'s str,
    meta: &'s crate::text::Metadata,
    content_hash: &'s str,
    paragraph: Option<(u32, u32)>,
    text: Option<String>,
    vector: &'s [f32],
    article_vector: Option<&'s [f32]>,
}

fn rows(store: &Store, level: Level, with_text: bool) -> Vec<Row<'_>> {
    let mut out = Vec::new();
    for (loc, rec) in store.live_articles() {
        let seg = &store.segments[loc.segment];
        let path = rec
            .file
            .as_deref()
            .map(|f| crate::store::display_path(f, &store.base));
        match level {
            Level::Article => {
                let text = with_text.then(|| {
                    crate::articles::paragraphs(store, loc)
                        .into_iter()
                        .map(|p| p.text)
                        .collect::<Vec<_>>()
                        .join("\n")
                });
                out.push(Row {
                    key: &rec.key,
                    file: rec.file.as_deref(),
                    path,
                    title: &rec.title,
                    meta: &rec.meta,
                    content_hash: &rec.content_hash,
                    paragraph: None,
                    text,
                    vector: seg.article_vector(loc.article),
                    article_vector: None,
                });
            }
            Level::Paragraph => {
                for (n, c) in seg.article_chunks(loc.article).enumerate() {
                    let chunk = seg.chunk(c);
                    out.push(Row {
                        key: &rec.key,
                        file: rec.file.as_deref(),
                        path: path.clone(),
                        title: &rec.title,
                        meta: &rec.meta,
                        content_hash: &rec.content_hash,
                        paragraph: Some((chunk.paragraph, chunk.window)),
                        text: Some(seg.chunk_text(c).into_owned()),
                        vector: seg.chunk_vector(c),
                        article_vector: (n == 0).then(|| seg.article_vector(loc.article)),
                    });
                }
            }
        }
    }
    out
}

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    pub rows: usize,
    pub files: Vec<String>,
}

/// Writes the store's articles or paragraphs to `out`.
pub fn export(
    store: &Store,
    level: Level,
    with_text: bool,
    format: ExportFormat,
    out: &Path,
) -> Result<ExportReport, ExchangeError> {
    let rows = rows(store, level, with_text);
    let dim = store.manifest.model.dim;
    let files = match format {
        ExportFormat::Parquet => {
            write_parquet(store, level, &rows, dim, out)?;
            vec![out.display().to_string()]
        }
        ExportFormat::Jsonl => {
            use std::io::Write;
            let f = std::fs::File::create(out).map_err(|e| err(out, e))?;
            let mut w = std::io::BufWriter::new(f);
            for r in &rows {
                let line = serde_json::json!({
                    "id": r.key, "file": r.file, "path": r.path, "title": r.title,
                    "date": r.meta.date, "source": r.meta.source, "url": r.meta.url,
                    "paragraph": r.paragraph.map(|p| p.0), "window": r.paragraph.map(|p| p.1),
                    "text": r.text, "vector": r.vector,
                });
                writeln!(w, "{line}").map_err(|e| err(out, e))?;
            }
            w.flush().map_err(|e| err(out, e))?;
            vec![out.display().to_string()]
        }
        ExportFormat::Npy => {
            let mut m = ndarray::Array2::<f32>::zeros((rows.len(), dim));
            for (mut row, r) in m.rows_mut().into_iter().zip(&rows) {
                row.assign(&ndarray::ArrayView1::from(r.vector));
            }
            ndarray_npy::write_npy(out, &m).map_err(|e| err(out, e))?;
            let ids_path = out.with_extension("ids.json");
            let ids: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| match r.paragraph {
                    None => serde_json::json!({"id": r.key, "title": r.title}),
                    Some((p, w)) => serde_json::json!({"id": r.key, "paragraph": p, "window": w}),
                })
                .collect();
            let doc = serde_json::json!({
                "model": store.manifest.model, "precision": store.manifest.precision,
                "level": level.name(), "article_vectors": store.manifest.article_vectors.name(),
                "ids": ids,
            });
            std::fs::write(&ids_path, doc.to_string()).map_err(|e| err(&ids_path, e))?;
            vec![out.display().to_string(), ids_path.display().to_string()]
        }
    };
    Ok(ExportReport {
        rows: rows.len(),
        files,
    })
}

fn vector_type(dim: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new_list_field(DataType::Float32, true)),
        dim as i32,
    )
}

fn write_parquet(
    store: &Store,
    level: Level,
    rows: &[Row],
    dim: usize,
    out: &Path,
) -> Result<(), ExchangeError> {
    let paragraph_level = level == Level::Paragraph;
    let mut fields = vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("file", DataType::Utf8, true),
        Field::new("path", DataType::Utf8, true),
        Field::new("title", DataType::Utf8, false),
        Field::new("date", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
        Field::new("credit", DataType::Utf8, true),
        Field::new("content_hash", DataType::Utf8, false),
    ];
    if paragraph_level {
        fields.push(Field::new("paragraph", DataType::UInt32, false));
        fields.push(Field::new("window", DataType::UInt32, false));
    }
    let with_text = rows.first().is_some_and(|r| r.text.is_some());
    if with_text {
        fields.push(Field::new("text", DataType::Utf8, false));
    }
    fields.push(Field::new("vector", vector_type(dim), false));
    if paragraph_level {
        fields.push(Field::new("article_vector", vector_type(dim), true));
    }
    let identity = serde_json::to_string(&store.manifest.model).expect("identity serializes");
    let article_vectors = store.manifest.article_vectors.name().to_string();
    // In the Arrow schema too: pyarrow, pandas and polars show a file's metadata from there.
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        [
            ("likewise.model".to_string(), identity.clone()),
            (
                "likewise.precision".to_string(),
                store.manifest.precision.clone(),
            ),
            ("likewise.level".to_string(), level.name().to_string()),
            (
                "likewise.article_vectors".to_string(),
                article_vectors.clone(),
            ),
        ]
        .into_iter()
        .collect::<std::collections::HashMap<String, String>>(),
    ));
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_key_value_metadata(Some(vec![
            parquet::file::metadata::KeyValue::new("likewise.model".into(), identity),
            parquet::file::metadata::KeyValue::new(
                "likewise.precision".into(),
                store.manifest.precision.clone(),
            ),
            parquet::file::metadata::KeyValue::new(
                "likewise.level".into(),
                level.name().to_string(),
            ),
            parquet::file::metadata::KeyValue::new(
                "likewise.article_vectors".into(),
                article_vectors,
            ),
        ]))
        .build();
    let tmp = out.with_extension("parquet.partial");
    let file = std::fs::File::create(&tmp).map_err(|e| err(&tmp, e))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props))
        .map_err(|e| err(out, e))?;
    for block in rows.chunks(8192) {
        let strings = |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
            let mut b = StringBuilder::new();
            for r in block {
                b.append_option(f(r));
            }
            Arc::new(b.finish())
        };
        let vectors = |f: &dyn for<'r> Fn(&'r Row<'_>) -> Option<&'r [f32]>| -> ArrayRef {
            let mut b = FixedSizeListBuilder::with_capacity(
                Float32Builder::with_capacity(block.len() * dim),
                dim as i32,
                block.len(),
            );
            for r in block {
                match f(r) {
                    Some(v) => {
                        b.values().append_slice(v);
                        b.append(true);
                    }
                    None => {
                        b.values().append_nulls(dim);
                        b.append(false);
                    }
                }
            }
            Arc::new(b.finish())
        };
        let mut columns: Vec<ArrayRef> = vec![
            strings(&|r| Some(r.key.to_string())),
            strings(&|r| r.file.map(str::to_string)),
            strings(&|r| r.path.clone()),
            strings(&|r| Some(r.title.to_string())),
            strings(&|r| r.meta.date.clone()),
            strings(&|r| r.meta.source.clone()),
            strings(&|r| r.meta.url.clone()),
            strings(&|r| r.meta.credit.clone()),
            strings(&|r| Some(r.content_hash.to_string())),
        ];
        if paragraph_level {
            let mut p = UInt32Builder::new();
            let mut w = UInt32Builder::new();
            for r in block {
                let (pp, ww) = r.paragraph.unwrap_or_default();
                p.append_value(pp);
                w.append_value(ww);
            }
            columns.push(Arc::new(p.finish()));
            columns.push(Arc::new(w.finish()));
        }
        if with_text {
            columns.push(strings(&|r| r.text.clone()));
        }
        columns.push(vectors(&|r| Some(r.vector)));
        if paragraph_level {
            columns.push(vectors(&|r| r.article_vector));
        }
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| err(out, e))?;
        writer.write(&batch).map_err(|e| err(out, e))?;
    }
    writer.close().map_err(|e| err(out, e))?;
    std::fs::rename(&tmp, out).map_err(|e| err(out, e))?;
    Ok(())
}

/// A paragraph window read from a Parquet file.
#[derive(Debug, Clone)]
pub struct ImportedChunk {
    pub paragraph: u32,
    pub window: u32,
    pub text: String,
    pub vector: Option<Vec<f32>>,
}

/// An article read from a Parquet file: its rows gathered under its id, in file order.
#[derive(Debug, Clone)]
pub struct ImportedArticle {
    pub key: String,
    pub file: Option<String>,
    pub title: String,
    pub meta: crate::text::Metadata,
    pub content_hash: Option<String>,
    /// Article level: the article's text (headline first unless a title is given).
    pub text: Option<String>,
    /// Paragraph level: its windows.
    pub chunks: Vec<ImportedChunk>,
    pub vector: Option<Vec<f32>>,
    /// The 1-based rows it came from, for messages.
    pub first_row: usize,
}

/// A Parquet file of articles.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The model the vectors were made with, and their precision, when the file says.
    pub model: Option<(ModelIdentity, String)>,
    /// How its article vectors were made (`whole-text-and-lede`, …), when the file says: its
    /// `likewise.article_vectors` metadata, or an `article_vectors` column.
    pub article_vectors: Option<String>,
    pub articles: Vec<ImportedArticle>,
    /// Rows that could not be used, each with its reason (never dropped silently).
    pub problems: Vec<String>,
    pub has_vectors: bool,
}

fn column<'b>(batch: &'b RecordBatch, name: &str) -> Option<&'b ArrayRef> {
    batch.column_by_name(name)
}

fn string_at(a: Option<&ArrayRef>, i: usize) -> Result<Option<String>, String> {
    let Some(a) = a else { return Ok(None) };
    if a.is_null(i) {
        return Ok(None);
    }
    if let Some(s) = a.as_any().downcast_ref::<StringArray>() {
        return Ok(Some(s.value(i).to_string()));
    }
    if let Some(s) = a.as_any().downcast_ref::<arrow_array::LargeStringArray>() {
        return Ok(Some(s.value(i).to_string()));
    }
    if let Some(n) = a.as_any().downcast_ref::<arrow_array::Int64Array>() {
        return Ok(Some(n.value(i).to_string()));
    }
    if let Some(n) = a.as_any().downcast_ref::<arrow_array::Int32Array>() {
        return Ok(Some(n.value(i).to_string()));
    }
    Err(format!(
        "a column holds {} where text was expected",
        a.data_type()
    ))
}

fn u32_at(a: Option<&ArrayRef>, i: usize) -> Result<Option<u32>, String> {
    let Some(a) = a else { return Ok(None) };
    if a.is_null(i) {
        return Ok(None);
    }
    let v: i64 = if let Some(x) = a.as_any().downcast_ref::<UInt32Array>() {
        x.value(i) as i64
    } else if let Some(x) = a.as_any().downcast_ref::<arrow_array::Int32Array>() {
        x.value(i) as i64
    } else if let Some(x) = a.as_any().downcast_ref::<arrow_array::Int64Array>() {
        x.value(i)
    } else if let Some(x) = a.as_any().downcast_ref::<arrow_array::UInt64Array>() {
        x.value(i) as i64
    } else {
        return Err(format!(
            "paragraph numbers must be integers, not {}",
            a.data_type()
        ));
    };
    u32::try_from(v)
        .map(Some)
        .map_err(|_| format!("paragraph number {v} is out of range"))
}

fn floats(values: &ArrayRef, range: std::ops::Range<usize>) -> Result<Vec<f32>, String> {
    if let Some(f) = values.as_any().downcast_ref::<Float32Array>() {
        return Ok(f.values()[range].to_vec());
    }
    if let Some(f) = values.as_any().downcast_ref::<Float64Array>() {
        return Ok(f.values()[range].iter().map(|&x| x as f32).collect());
    }
    Err(format!(
        "vectors must be lists of float or double, not of {}",
        values.data_type()
    ))
}

fn vector_at(a: Option<&ArrayRef>, i: usize) -> Result<Option<Vec<f32>>, String> {
    let Some(a) = a else { return Ok(None) };
    if a.is_null(i) {
        return Ok(None);
    }
    let any = a.as_any();
    let v = if let Some(l) = any.downcast_ref::<FixedSizeListArray>() {
        let n = l.value_length() as usize;
        let start = l.value_offset_at(i);
        floats(l.values(), start..start + n)?
    } else if let Some(l) = any.downcast_ref::<ListArray>() {
        let o = l.value_offsets();
        floats(l.values(), o[i] as usize..o[i + 1] as usize)?
    } else if let Some(l) = any.downcast_ref::<LargeListArray>() {
        let o = l.value_offsets();
        floats(l.values(), o[i] as usize..o[i + 1] as usize)?
    } else {
        return Err(format!(
            "vectors must be lists of float, not {}",
            a.data_type()
        ));
    };
    if v.iter().any(|x| !x.is_finite()) {
        return Err("a vector holds NaN or infinity".into());
    }
    Ok(Some(v))
}

/// Reads a Parquet file of articles (article or paragraph rows), grouping rows by `id`.
pub fn read_parquet(path: &Path) -> Result<Imported, ExchangeError> {
    let file = std::fs::File::open(path).map_err(|e| err(path, e))?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| err(path, format!("not a readable Parquet file: {e}")))?;
    let kv: std::collections::HashMap<String, String> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|k| k.value.clone().map(|v| (k.key.clone(), v)))
                .collect()
        })
        .unwrap_or_default();
    let model = match kv.get("likewise.model") {
        Some(json) => Some((
            serde_json::from_str::<ModelIdentity>(json).map_err(|e| {
                err(
                    path,
                    format!("its likewise.model metadata is unreadable: {e}"),
                )
            })?,
            kv.get("likewise.precision")
                .cloned()
                .unwrap_or_else(|| "f32".into()),
        )),
        None => None,
    };
    let mut article_vectors = kv.get("likewise.article_vectors").cloned();
    let schema = builder.schema().clone();
    let has = |name: &str| schema.field_with_name(name).is_ok();
    if !has("id") && !has("key") {
        return Err(err(
            path,
            "it has no `id` column (each row names its article)",
        ));
    }
    if !has("text") && !has("vector") {
        return Err(err(path, "it has neither a `text` nor a `vector` column"));
    }
    let has_vectors = has("vector");
    let reader = builder.build().map_err(|e| err(path, e))?;
    let mut articles: Vec<ImportedArticle> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    let mut problems = Vec::new();
    let mut row_base = 0usize;
    // Without the file's metadata (Spark, pandas and DuckDB write none of ours), a `model` column
    // of the model's identity and a `precision` column say what made the vectors (the columns
    // `likewise.spark.embed` adds); every row must name the same.
    let mut model = model;
    let mut row_model: Option<(String, String)> = None;
    for batch in reader {
        let batch = batch.map_err(|e| err(path, format!("cannot be read: {e}")))?;
        if model.is_none() {
            for i in 0..batch.num_rows() {
                let Some(m) = string_at(column(&batch, "model"), i).map_err(|e| err(path, e))?
                else {
                    continue;
                };
                let p = string_at(column(&batch, "precision"), i)
                    .map_err(|e| err(path, e))?
                    .unwrap_or_else(|| "f32".into());
                match &row_model {
                    None => row_model = Some((m, p)),
                    Some(first) if *first == (m.clone(), p.clone()) => {}
                    Some(_) => {
                        return Err(err(
                            path,
                            format!("row {}: its `model` or `precision` differs from an earlier row's; one file holds the vectors of one model", row_base + i + 1),
                        ))
                    }
                }
            }
        }
        if !kv.contains_key("likewise.article_vectors") {
            for i in 0..batch.num_rows() {
                let Some(m) =
                    string_at(column(&batch, "article_vectors"), i).map_err(|e| err(path, e))?
                else {
                    continue;
                };
                match &article_vectors {
                    None => article_vectors = Some(m),
                    Some(first) if *first == m => {}
                    Some(first) => {
                        return Err(err(
                            path,
                            format!("row {}: its `article_vectors` is `{m}`, an earlier row's `{first}`; one file holds article vectors made one way", row_base + i + 1),
                        ))
                    }
                }
            }
        }
        let id_col = column(&batch, "id").or_else(|| column(&batch, "key"));
        for i in 0..batch.num_rows() {
            let row = row_base + i + 1;
            let parsed = (|| -> Result<Option<(String, ImportedArticle)>, String> {
                let Some(key) = string_at(id_col, i)?.filter(|k| !k.trim().is_empty()) else {
                    return Err("no id".into());
                };
                let text = string_at(column(&batch, "text"), i)?;
                let vector = vector_at(column(&batch, "vector"), i)?;
                let paragraph = u32_at(column(&batch, "paragraph"), i)?;
                if text.as_deref().is_none_or(|t| t.trim().is_empty()) && vector.is_none() {
                    return Err("neither text nor a vector".into());
                }
                let meta = crate::text::Metadata {
                    date: string_at(column(&batch, "date"), i)?
                        .filter(|d| !d.trim().is_empty())
                        .map(|d| crate::text::normalize_date(&d)),
                    source: string_at(column(&batch, "source"), i)?,
                    url: string_at(column(&batch, "url"), i)?,
                    credit: string_at(column(&batch, "credit"), i)?,
                    extra: Default::default(),
                };
                let mut article = ImportedArticle {
                    key: key.clone(),
                    file: string_at(column(&batch, "file"), i)?,
                    title: string_at(column(&batch, "title"), i)?.unwrap_or_default(),
                    meta,
                    content_hash: string_at(column(&batch, "content_hash"), i)?,
                    text: None,
                    chunks: Vec::new(),
                    vector: None,
                    first_row: row,
                };
                match paragraph {
                    Some(p) => {
                        if text.as_deref().is_none_or(|t| t.trim().is_empty()) {
                            return Err("a paragraph row needs its text".into());
                        }
                        article.chunks.push(ImportedChunk {
                            paragraph: p,
                            window: u32_at(column(&batch, "window"), i)?.unwrap_or(0),
                            text: text.unwrap_or_default(),
                            vector,
                        });
                        article.vector = vector_at(column(&batch, "article_vector"), i)?;
                    }
                    None => {
                        article.text = text;
                        article.vector = vector;
                    }
                }
                Ok(Some((key, article)))
            })();
            match parsed {
                Ok(Some((key, a))) => match index.get(&key) {
                    Some(&at) => {
                        let into = &mut articles[at];
                        if a.chunks.is_empty() || into.chunks.is_empty() {
                            problems.push(format!(
                                "row {row}: id `{key}` repeats an earlier article row; skipped"
                            ));
                            continue;
                        }
                        into.chunks.extend(a.chunks);
                        if into.vector.is_none() {
                            into.vector = a.vector;
                        }
                    }
                    None => {
                        index.insert(key, articles.len());
                        articles.push(a);
                    }
                },
                Ok(None) => {}
                Err(reason) => problems.push(format!("row {row}: {reason}; skipped")),
            }
        }
        row_base += batch.num_rows();
    }
    if let (None, Some((json, precision))) = (&model, row_model) {
        let identity = serde_json::from_str::<ModelIdentity>(&json).map_err(|e| {
            err(
                path,
                format!("its `model` column is not a model identity: {e}"),
            )
        })?;
        model = Some((identity, precision));
    }
    Ok(Imported {
        model,
        article_vectors,
        articles,
        problems,
        has_vectors,
    })
}
