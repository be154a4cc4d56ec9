//! likewise: a semantic similarity engine for news.
//!
//! A sentence-transformer run locally by candle embeds every article and every paragraph; a flat
//! store on disk keeps the vectors and answers nearest-neighbour queries exactly.
//!
//! Modules, one concern each:
//! - [`model`]: find, verify, fetch and run the model (tokenize, forward, pool);
//! - [`text`]: raw article text to headline, paragraphs and metadata;
//! - [`store`]: the on-disk format, atomic writes, the writer lock;
//! - [`index`]: files to stored vectors, incrementally;
//! - [`search`]: exact top-k over the store; [`similarity`]: many-against-many by blocks;
//! - [`cluster`], [`dupes`], [`compare`]: topics and stories, duplicate tiers, paragraph
//!   alignment, all on the stored vectors ([`articles`] lays them out);
//! - [`exchange`]: vectors in and out as Parquet, `.npy` and JSON lines;
//! - [`engine`]: every operation as a typed request and result, over one store and one model;
//! - front ends over the engine: [`cli`] (arguments to requests, results to tables or JSON);
//!   [`serve`] (the web page and the JSON API over HTTP); [`bench`]: rerunnable measurements.

pub mod articles;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod compact;
pub mod compare;
pub mod dupes;
pub mod engine;
pub mod exchange;
pub mod hybrid;
pub mod index;
pub mod ingest;
pub mod lexical;
pub mod mcp;
pub mod model;
pub mod percolate;
pub mod search;
pub mod serve;
pub mod similarity;
pub mod store;
pub mod stories;
pub mod text;
pub mod watch;
