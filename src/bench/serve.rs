//! A running `likewise serve` under load: queries/s and latency per number of clients, and the
//! server's memory over a soak.

use crate::engine::EngineError;
use crate::store::Store;
use serde_json::json;
use std::path::Path;
use std::time::Instant;

use super::*;

/// Words of each passage `bench serve` sends: the 25 of `bench query`, an analyst's sentence.
const PASSAGE_WORDS: usize = 25;

/// `likewise bench serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeBenchArgs {
    /// Numbers of concurrent clients, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub clients: Vec<usize>,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Then a run of this many seconds at the largest number of clients, the server's resident
    /// memory sampled every 10 s (0: none).
    #[arg(long, default_value_t = 0)]
    pub soak: u64,
}

/// The server's resident memory in bytes (Linux), from /proc.
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A `likewise serve` child process on a free loopback port; stopped when dropped.
struct ServerProcess {
    child: std::process::Child,
    base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(store: &Path) -> Result<ServerProcess, EngineError> {
    use std::io::BufRead;
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args(["--index"])
        .arg(store)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let base = line.trim().trim_end_matches('/').to_string();
    if !base.starts_with("http://127.0.0.1:") {
        let _ = child.kill();
        return Err(EngineError::Input(format!(
            "likewise serve did not start (it printed {line:?})"
        )));
    }
    Ok(ServerProcess { child, base })
}

/// Makes the body of the i-th request.
type RequestBody = std::sync::Arc<dyn Fn(usize) -> String + Send + Sync>;

/// One client's connection: HTTP/1.1 keep-alive, one request at a time (hyper's client).
async fn load_client(
    addr: String,
    deadline: Instant,
    first: usize,
    step: usize,
    body: RequestBody,
) -> (Vec<f64>, usize) {
    let mut latencies = Vec::new();
    let mut errors = 0usize;
    let connect = async {
        let stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        Some(sender)
    };
    let Some(mut sender) = connect.await else {
        return (latencies, 1);
    };
    let mut i = first;
    while Instant::now() < deadline {
        let req = hyper::Request::post("/api/query")
            .header("host", &addr)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body(i)))
            .expect("a valid request");
        let t = Instant::now();
        let ok = match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let bytes =
                    axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 1 << 26).await;
                status == 200 && bytes.is_ok()
            }
            Err(_) => false,
        };
        if ok {
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
        } else {
            errors += 1;
            break;
        }
        i += step;
    }
    (latencies, errors)
}

/// One timed run: `clients` connections sending requests made by `body(i)` until `seconds`
/// pass, each waiting for its answer before the next.
fn load_run(base: &str, clients: usize, seconds: u64, body: &RequestBody) -> serde_json::Value {
    let addr = base.trim_start_matches("http://").to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the clients");
    let started = Instant::now();
    let deadline = started + std::time::Duration::from_secs(seconds);
    let results: Vec<(Vec<f64>, usize)> = runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for c in 0..clients {
            set.spawn(load_client(
                addr.clone(),
                deadline,
                c,
                clients,
                body.clone(),
            ));
        }
        set.join_all().await
    });
    let wall = started.elapsed().as_secs_f64();
    let mut all: Vec<f64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    let errors: usize = results.iter().map(|r| r.1).sum();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if all.is_empty() {
            0.0
        } else {
            all[((all.len() - 1) as f64 * p).round() as usize]
        }
    };
    json!({
        "clients": clients,
        "requests": all.len(),
        "errors": errors,
        "queries_per_s": all.len() as f64 / wall,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    })
}

/// `likewise bench serve`: starts `likewise serve` on the store, then loads it from this
/// process over loopback with passage queries (the first 25 words of the store's own paragraphs,
/// a different one each request) and `like` queries (its articles), at each number of clients for a bounded
/// time; the server's resident memory is read before and after each run.
pub fn serve(store_dir: &Path, args: &ServeBenchArgs) -> Result<(), EngineError> {
    let store = Store::open(store_dir)?;
    let mut passages = Vec::new();
    let mut keys = Vec::new();
    for (loc, rec) in store.live_articles() {
        keys.push(rec.key.clone());
        let seg = &store.segments[loc.segment];
        for c in seg.article_chunks(loc.article).take(3) {
            let text = seg.chunk_text(c);
            if text.split_whitespace().count() >= PASSAGE_WORDS {
                passages.push(
                    text.split_whitespace()
                        .take(60)
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
        }
    }
    drop(store);
    if passages.is_empty() || keys.len() < 2 {
        return Err(EngineError::Invalid(
            "bench serve needs a store of at least two articles with paragraphs".into(),
        ));
    }
    let server = start_server(store_dir)?;
    let pid = server.child.id();
    let (passages, keys) = (std::sync::Arc::new(passages), std::sync::Arc::new(keys));
    let passage: RequestBody = {
        let p = passages.clone();
        std::sync::Arc::new(move |i| json!({"text": p[i * 7919 % p.len()]}).to_string())
    };
    let like: RequestBody = {
        let k = keys.clone();
        std::sync::Arc::new(move |i| json!({"like": k[i * 7919 % k.len()]}).to_string())
    };
    // Wait for the map the server computes at start (it takes both cores for seconds), then
    // warm up: the model's first batches, the store's pages.
    ureq::get(&format!("{}/api/map", server.base))
        .timeout(std::time::Duration::from_secs(600))
        .call()
        .map_err(|e| EngineError::Input(format!("the server's map: {e}")))?;
    // (The load itself goes through hyper's client, one keep-alive connection per client.)
    load_run(&server.base, 2, 2, &passage);
    let mut runs = Vec::new();
    for (kind, body) in [("passage", &passage), ("like", &like)] {
        for &c in &args.clients {
            let before = resident_bytes(pid);
            let mut r = load_run(&server.base, c.max(1), args.seconds, body);
            r["kind"] = json!(kind);
            r["server_rss_mb_before"] = json!(before.map(|b| b as f64 / 1e6));
            r["server_rss_mb_after"] = json!(resident_bytes(pid).map(|b| b as f64 / 1e6));
            eprintln!("likewise: {r}");
            runs.push(r);
        }
    }
    let mut soak = Vec::new();
    if args.soak > 0 {
        let clients = args.clients.iter().copied().max().unwrap_or(32);
        let mut left = args.soak;
        while left > 0 {
            let step = left.min(10);
            let r = load_run(&server.base, clients, step, &passage);
            let rss = resident_bytes(pid).map(|b| b as f64 / 1e6);
            eprintln!("likewise: soak {}s left: rss {rss:?} MB, {r}", left - step);
            soak.push(json!({"rss_mb": rss, "queries_per_s": r["queries_per_s"], "errors": r["errors"], "p99_ms": r["p99_ms"]}));
            left -= step;
        }
    }
    let doc = json!({
        "store": store_dir.display().to_string(),
        "articles": keys.len(),
        "cpu": cpu_name(),
        "threads": threads(),
        "seconds_per_run": args.seconds,
        "runs": runs,
        "soak": soak,
    });
    println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    Ok(())
}
