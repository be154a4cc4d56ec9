//! `likewise serve` as a client sees it: a real server on a free loopback port, the real model,
//! the seeds' store. The same documents as the CLI, errors with the right status, the token,
//! the limits, a new generation picked up, a damaged store answered with 503 and recovered
//! from, writes only when allowed, and a graceful stop.

mod common;

use serde_json::{json, Value};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RAFAH: &str = "Blinken said a major ground operation in Rafah would be a mistake";

/// A running server; killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `likewise serve` on `store` with `args`, and waits until it answers.
fn serve(store: &Path, args: &[&str]) -> Server {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(assert_cmd::cargo::cargo_bin("likewise"))
        .args(["serve", "--addr", &addr])
        .args(args)
        .env("LIKEWISE_MODEL", common::model_dir())
        .env("LIKEWISE_INDEX", store)
        .env_remove("RAYON_NUM_THREADS")
        .current_dir(common::root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("likewise serve starts");
    let mut server = Server {
        child,
        base: format!("http://{addr}"),
    };
    // The first line on stdout is the address, printed once the socket listens.
    let mut line = String::new();
    std::io::BufReader::new(server.child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with(&server.base), "printed {line:?}");
    server
}

fn index_seeds(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    common::likewise(&store)
        .args(["index"])
        .arg(common::seeds())
        .assert()
        .success();
    store
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .redirects(0)
        .build()
}

/// (status, JSON body) of a response, whatever its status.
fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let body: Value = serde_json::from_str(&resp.into_string().unwrap()).expect("a JSON body");
    (status, body)
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    answer(agent().get(&format!("{}{path}", s.base)).call())
}

fn post(s: &Server, path: &str, body: &str) -> (u16, Value) {
    answer(
        agent()
            .post(&format!("{}{path}", s.base))
            .set("Content-Type", "application/json")
            .send_string(body),
    )
}

/// The start of the server's answer to a raw request. The server may answer and close before
/// the request is all sent (a body over the limit), so one thread writes while this one reads: a
/// client that reads only after its last write could meet a broken pipe instead of the answer.
fn head_while_sending(s: &Server, request: Vec<u8>) -> String {
    let mut stream = std::net::TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
    let mut writer = stream.try_clone().unwrap();
    // Whether every byte goes out depends on how soon the server closes: not what is tested.
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = [0u8; 200];
    let n = stream.read(&mut head).unwrap();
    // A write still blocked on a server that stopped reading ends here with an error.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    sender.join().unwrap();
    String::from_utf8_lossy(&head[..n]).into_owned()
}

fn cli_json(store: &Path, args: &[&str]) -> Value {
    let out = common::stdout_of(common::likewise(store).args(args));
    serde_json::from_str(&out).expect("JSON from the CLI")
}

#[test]
fn the_api_gives_the_cli_documents() {
    let dir = tempfile::tempdir().unwrap();
    let store = index_seeds(dir.path());
    let s = serve(&store, &[]);
    assert_eq!(get(&s, "/api/health").0, 200);

    let (status, doc) = post(&s, "/api/query", &json!({"text": RAFAH}).to_string());
    assert_eq!(status, 200);
    assert_eq!(doc, cli_json(&store, &["query", RAFAH, "--format", "json"]));
    let keys: Vec<&str> = doc["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["key"].as_str().unwrap())
        .collect();
    // The three articles on the March 2024 Rafah warnings first, before the truce's two.
    let mut top3: Vec<&str> = keys[..3]
        .iter()
        .map(|k| &k[k.rfind('/').unwrap() + 1..][..3])
        .collect();
    top3.sort();
    assert_eq!(top3, ["002", "003", "004"], "{keys:?}");
    // Every mode, the same document as the CLI's.
    for mode in ["semantic", "lexical", "hybrid"] {
        let (status, doc) = post(
            &s,
            "/api/query",
            &json!({"text": "Herzog", "mode": mode}).to_string(),
        );
        assert_eq!(status, 200);
        assert_eq!(
            doc,
            cli_json(
                &store,
                &["query", "Herzog", "--mode", mode, "--format", "json"]
            )
        );
        assert_eq!(doc["mode"], mode);
    }

    let req =
        json!({"text": RAFAH, "level": "paragraph", "k": 3, "min_score": 0.3, "source": "Reuters"});
    let (_, doc) = post(&s, "/api/query", &req.to_string());
    assert_eq!(
        doc,
        cli_json(
            &store,
            &[
                "query",
                RAFAH,
                "--level",
                "paragraph",
                "-k",
                "3",
                "--min-score",
                "0.3",
                "--source",
                "Reuters",
                "--format",
                "json"
            ]
        )
    );
    let (_, doc) = post(
        &s,
        "/api/query",
        &json!({"like": ["000", "003"]}).to_string(),
    );
    assert_eq!(
        doc,
        cli_json(
            &store,
            &["query", "--like", "000", "--like", "003", "--format", "json"]
        )
    );
    for (path, args) in [
        (
            "/api/compare?a=003&b=004",
            vec!["compare", "003", "004", "--format", "json"],
        ),
        (
            "/api/clusters?by=story",
            vec!["cluster", "--by", "story", "--format", "json"],
        ),
        (
            "/api/clusters?k=2",
            vec!["cluster", "--k", "2", "--format", "json"],
        ),
        ("/api/dupes", vec!["dupes", "--format", "json"]),
        (
            "/api/dupes?level=paragraph&tier=near-copy,exact",
            vec![
                "dupes",
                "--level",
                "paragraph",
                "--tier",
                "near-copy",
                "--tier",
                "exact",
                "--format",
                "json",
            ],
        ),
        ("/api/info", vec!["info", "--format", "json"]),
    ] {
        let (status, doc) = get(&s, path);
        assert_eq!(status, 200, "{path}: {doc}");
        assert_eq!(doc, cli_json(&store, &args), "{path}");
    }

    // An article whole, scored against a passage; its neighbours and duplicates.
    let key = keys[0];
    let (status, doc) = get(
        &s,
        &format!("/api/articles/{}?text={}", urlencode(key), urlencode(RAFAH)),
    );
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["key"], key);
    let paragraphs = doc["paragraphs"].as_array().unwrap();
    assert!(paragraphs.len() > 3);
    assert!(paragraphs.iter().all(|p| p["score"].is_f64()));
    assert_eq!(doc["nearest"].as_array().unwrap().len(), 4);
    assert!(doc["duplicates"].is_array());

    // The map: one point per article, two topics.
    let (status, map) = get(&s, "/api/map");
    assert_eq!(status, 200);
    let points = map["points"].as_array().unwrap();
    assert_eq!(points.len(), 5);
    let colours: std::collections::HashSet<u64> = points
        .iter()
        .map(|p| p["cluster"].as_u64().unwrap())
        .collect();
    assert_eq!(colours.len(), 2, "{map}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let store = index_seeds(dir.path());
    let s = serve(&store, &["--max-body", "65536", "--timeout", "3"]);
    let cases: Vec<(u16, (u16, Value), &str)> = vec![
        (400, post(&s, "/api/query", "{not json"), "bad JSON"),
        (
            400,
            post(&s, "/api/query", r#"{"txt": "x"}"#),
            "unknown field",
        ),
        (
            400,
            post(&s, "/api/query", r#"{"text": "x", "level": "word"}"#),
            "unknown variant",
        ),
        (400, post(&s, "/api/query", r#"{"text": "  "}"#), "empty"),
        (
            400,
            post(&s, "/api/query", r#"{"text": "x", "since": "yesterday"}"#),
            "not a date",
        ),
        (
            400,
            post(&s, "/api/query", r#"{"text": "x", "k": 5000}"#),
            "at most",
        ),
        (400, post(&s, "/api/query", r#"{}"#), "give a passage"),
        (
            400,
            post(&s, "/api/query", r#"{"text": "x", "since": "2024-13-45"}"#),
            "not a day of the calendar",
        ),
        (
            400,
            post(&s, "/api/query", r#"{"text": "x", "until": "2023-02-29"}"#),
            "not a day of the calendar",
        ),
        (
            400,
            post(&s, "/api/query", r#"{"text": "Rafah \"\""}"#),
            "empty phrase",
        ),
        (
            400,
            post(&s, "/api/query", r#"{"text": "the of", "mode": "lexical"}"#),
            "no word to search for",
        ),
        (
            400,
            post(&s, "/api/query", r#"{"text": "x", "mode": "words"}"#),
            "unknown variant",
        ),
        (
            404,
            get(&s, "/api/articles/no-such-article"),
            "no indexed article",
        ),
        (
            404,
            get(&s, "/api/compare?a=003&b=nothing"),
            "no indexed article",
        ),
        (400, get(&s, "/api/compare?a=003"), "missing field"),
        (
            400,
            get(&s, "/api/clusters?by=story&k=3"),
            "stories are cut",
        ),
        (400, get(&s, "/api/dupes?tier=copies"), "none of exact"),
        (404, get(&s, "/api/nothing-here"), "no such endpoint"),
        (
            403,
            post(&s, "/api/articles", r#"{"text": "x"}"#),
            "--allow-index",
        ),
    ];
    for (want, (status, body), says) in cases {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["code"], want);
        let msg = body["error"].as_str().unwrap();
        assert!(msg.contains(says), "{msg:?} should say {says:?}");
    }
    // A method an endpoint does not take: 405 as JSON, with the methods it does take.
    let r = agent()
        .request("DELETE", &format!("{}/api/info", s.base))
        .call();
    let Err(ureq::Error::Status(405, r)) = r else {
        panic!("DELETE /api/info: {r:?}")
    };
    assert_eq!(r.header("allow"), Some("GET,HEAD"));
    let body: Value = r.into_json().unwrap();
    assert_eq!(body["code"], 405);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("DELETE is not served at /api/info"));
    // A 10 MB body is refused with 413 on its announced length, before it is read.
    let mut big = b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{\"text\": \"".to_vec();
    big.extend_from_slice(&vec![b'a'; 100_000]);
    let head = head_while_sending(&s, big);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // A body over the limit sent without a length (chunked) is cut off at the limit too.
    let mut chunked = b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let body = format!(r#"{{"text": "{}"}}"#, "word ".repeat(20_000));
    for piece in body.as_bytes().chunks(8192) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = head_while_sending(&s, chunked);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // A client that sends half its headers and stalls holds nobody up, and is cut off.
    let mut slow = std::net::TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
    slow.write_all(b"POST /api/query HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let t = Instant::now();
    assert_eq!(get(&s, "/api/health").0, 200);
    assert!(t.elapsed() < Duration::from_secs(2));
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "the stalled connection was closed by the server"
    );
    // Still serving.
    let (status, doc) = post(
        &s,
        "/api/query",
        &json!({"text": RAFAH, "k": 1}).to_string(),
    );
    assert_eq!(status, 200);
    assert_eq!(doc["hits"].as_array().unwrap().len(), 1);
}

#[test]
fn a_token_guards_every_call_and_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = index_seeds(dir.path());
    // Another address without a token or --no-auth is refused at start.
    let out = Command::new(assert_cmd::cargo::cargo_bin("likewise"))
        .args(["serve", "--addr", "0.0.0.0:0"])
        .env("LIKEWISE_MODEL", common::model_dir())
        .env("LIKEWISE_INDEX", &store)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("--token") && msg.contains("--no-auth"),
        "{msg}"
    );

    // Options that would make every request fail, or a CORS origin no browser sends, are
    // refused at start, naming the option.
    for (args, says) in [
        (
            &["--cors", "https://newsroom.example/page"][..],
            "is not an origin",
        ),
        (&["--cors", "newsroom.example"][..], "is not an origin"),
        (&["--timeout", "0"][..], "--timeout 0"),
        (&["--max-body", "0"][..], "--max-body 0"),
    ] {
        let out = Command::new(assert_cmd::cargo::cargo_bin("likewise"))
            .arg("serve")
            .args(args)
            .args(["--addr", "127.0.0.1:0"])
            .env("LIKEWISE_MODEL", common::model_dir())
            .env("LIKEWISE_INDEX", &store)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(msg.contains(says), "{args:?}: {msg}");
    }

    let token = "s3cret-token-123";
    let s = serve(&store, &["--token", token]);
    let (status, body) = get(&s, "/api/info");
    assert_eq!(status, 401, "{body}");
    let (status, _) = answer(
        agent()
            .get(&format!("{}/api/info", s.base))
            .set("Authorization", "Bearer wrong-token-000")
            .call(),
    );
    assert_eq!(status, 401);
    let (status, body) = answer(
        agent()
            .get(&format!("{}/api/info", s.base))
            .set("Authorization", &format!("Bearer {token}"))
            .call(),
    );
    assert_eq!(status, 200);
    assert_eq!(body["articles"], 5);
    // The page: refused without the token; `/?token=` sets a cookie and leaves it out of the
    // address; the cookie then opens the page and the API.
    let page = agent().get(&format!("{}/", s.base)).call();
    assert!(matches!(page, Err(ureq::Error::Status(401, _))));
    let r = agent()
        .get(&format!("{}/?token={token}", s.base))
        .call()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.header("location"), Some("/"));
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = agent()
        .get(&format!("{}/", s.base))
        .set("Cookie", &cookie)
        .call()
        .unwrap();
    assert!(page
        .into_string()
        .unwrap()
        .contains("<title>likewise</title>"));
    let (status, _) = answer(
        agent()
            .post(&format!("{}/api/query", s.base))
            .set("Cookie", &cookie)
            .send_string(&json!({"text": RAFAH}).to_string()),
    );
    assert_eq!(status, 200);
    // CORS is off: no cross-origin header is given.
    let r = agent()
        .get(&format!("{}/api/health", s.base))
        .set("Origin", "https://elsewhere.example")
        .call()
        .unwrap();
    assert!(r.header("access-control-allow-origin").is_none());
    drop(s);
    // With --cors, the answers name that origin, whichever origin asks: a browser lets a page
    // read them only when the name is its own.
    let s = serve(&store, &["--cors", "https://newsroom.example"]);
    for origin in ["https://newsroom.example", "https://elsewhere.example"] {
        let r = agent()
            .get(&format!("{}/api/health", s.base))
            .set("Origin", origin)
            .call()
            .unwrap();
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://newsroom.example"),
            "{origin}"
        );
    }
}

#[test]
fn new_generations_are_seen_and_a_damaged_store_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = index_seeds(dir.path());
    let s = serve(&store, &[]);
    assert_eq!(get(&s, "/api/info").1["articles"], 5);
    // `likewise index` commits while the server runs: the next request sees the new article.
    let extra = dir.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(
        extra.join("eclipse.txt"),
        "Millions watch total solar eclipse across North America\n\nThe moon blocked the sun for four minutes over Texas, Ohio and Maine as crowds gathered to watch the eclipse.\n",
    )
    .unwrap();
    common::likewise(&store)
        .arg("index")
        .arg(&extra)
        .assert()
        .success();
    assert_eq!(get(&s, "/api/info").1["articles"], 6);
    let (_, doc) = post(
        &s,
        "/api/query",
        &json!({"text": "solar eclipse crowds", "k": 1}).to_string(),
    );
    assert!(doc["hits"][0]["title"]
        .as_str()
        .unwrap()
        .contains("eclipse"));
    // A damaged manifest: 503 with the reason; mended: answers again, no restart.
    let manifest = store.join("MANIFEST");
    let good = std::fs::read(&manifest).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(&manifest, &bad).unwrap();
    let (status, body) = get(&s, "/api/info");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("damaged"),
        "{body}"
    );
    assert_eq!(get(&s, "/api/health").0, 200);
    std::fs::write(&manifest, &good).unwrap();
    let (status, body) = get(&s, "/api/info");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["articles"], 6);
}

#[test]
fn articles_are_posted_only_when_allowed_and_a_stop_finishes_requests() {
    let dir = tempfile::tempdir().unwrap();
    let store = index_seeds(dir.path());
    let mut s = serve(&store, &["--allow-index"]);
    let lines = [
        json!({"id": "wire-1", "title": "Flooding closes roads in Valencia", "text": "Heavy rain flooded streets in Valencia on Tuesday, closing roads and schools.", "source": "Wire", "date": "2024-10-29"}),
        json!({"id": "wire-2", "text": "Markets rallied\n\nStocks rose sharply after the central bank held interest rates."}),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect::<String>()
        + "{broken line\n"
        + &json!({"id": 3, "text": ""}).to_string();
    let (status, doc) = post(&s, "/api/articles", &body);
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["report"]["articles_new"], 2);
    let skipped = doc["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2, "{doc}");
    assert!(skipped[0].as_str().unwrap().contains("request:3"), "{doc}");
    let (_, info) = get(&s, "/api/info");
    assert_eq!(info["articles"], 7);
    let (status, art) = get(&s, "/api/articles/wire-1");
    assert_eq!(status, 200);
    assert_eq!(art["source"], "Wire");
    // The same lines again change nothing.
    let (_, doc) = post(&s, "/api/articles", &format!("{}\n", lines[0]));
    assert_eq!(doc["report"]["articles_unchanged"], 1);
    // One JSON array of articles is taken too, each element named by its place when skipped.
    let array = json!([
        {"id": "wire-3", "text": "Rescuers searched flooded towns near Valencia."},
        {"id": "wire-4"},
    ]);
    let (status, doc) = post(&s, "/api/articles", &array.to_string());
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["report"]["articles_new"], 1, "{doc}");
    let skipped = doc["skipped"].as_array().unwrap();
    assert!(
        skipped.len() == 1 && skipped[0].as_str().unwrap().contains("request:2"),
        "{doc}"
    );
    let (status, doc) = post(&s, "/api/articles", "[{\"text\": \"unclosed\"}");
    assert_eq!(status, 400, "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("not a JSON array"),
        "{doc}"
    );
    let (_, info) = get(&s, "/api/info");
    assert_eq!(info["articles"], 8);

    // SIGTERM while a request is in flight: it is answered, then the server exits 0.
    let base = s.base.clone();
    let inflight = std::thread::spawn(move || {
        answer(
            agent()
                .post(&format!("{base}/api/query"))
                .send_string(&json!({"texts": vec![RAFAH.repeat(8); 100]}).to_string()),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (status, doc) = inflight.join().unwrap();
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["queries"].as_array().unwrap().len(), 100);
    let t = Instant::now();
    let code = loop {
        if let Some(c) = s.child.try_wait().unwrap() {
            break c;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the server did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code.code(), Some(0));
}

#[test]
fn the_openapi_document_describes_every_route_the_server_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = index_seeds(dir.path());
    let s = serve(&store, &["--token", "t0ken-for-openapi"]);
    // The description is guarded by the token, as the rest of the API is.
    let (status, _) = get(&s, "/api/openapi.json");
    assert_eq!(status, 401);
    let (status, doc) = answer(
        agent()
            .get(&format!("{}/api/openapi.json", s.base))
            .set("Authorization", "Bearer t0ken-for-openapi")
            .call(),
    );
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for route in [
        "/api/health",
        "/api/query",
        "/api/articles",
        "/api/articles/{key}",
        "/api/compare",
        "/api/clusters",
        "/api/dupes",
        "/api/info",
        "/api/map",
        "/api/alerts",
        "/api/alerts/log",
        "/api/alerts/stream",
        "/api/alerts/{name}",
        "/api/stories",
        "/api/stories/{id}",
    ] {
        assert!(
            paths.contains(&route),
            "{route} is not described: {paths:?}"
        );
    }
    // Every described path is served (a 404 "no such endpoint" would mean a stale description).
    for path in &paths {
        let concrete = path
            .replace("{key}", "003")
            .replace("{name}", "no-such-search")
            .replace("{id}", "1");
        let method = ["get", "post", "delete"]
            .into_iter()
            .find(|m| doc["paths"][path][m].is_object())
            .unwrap()
            .to_uppercase();
        let r = agent()
            .request(&method, &format!("{}{concrete}", s.base))
            .set("Authorization", "Bearer t0ken-for-openapi")
            .call();
        if *path == "/api/alerts/stream" {
            // An event stream stays open: its status and type say it is served.
            let r = r.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.content_type(), "text/event-stream");
            continue;
        }
        let (status, body) = answer(r);
        assert!(
            status != 404 && status != 405
                || body["error"].as_str().is_some_and(
                    |e| !e.contains("no such endpoint") && !e.contains("is not served")
                ),
            "{path}: {status} {body}"
        );
    }
    // The request's fields are the ones the handler takes (it refuses unknown fields).
    let query = &doc["components"]["schemas"]["QueryRequest"];
    for field in [
        "text", "texts", "like", "level", "mode", "k", "since", "until", "source",
    ] {
        assert!(
            query["properties"][field].is_object(),
            "QueryRequest.{field}"
        );
    }
    assert_eq!(query["additionalProperties"], false);
    assert_eq!(
        doc["components"]["schemas"]["SearchMode"]["enum"],
        serde_json::json!(["hybrid", "semantic", "lexical"])
    );
}
