//! Following the news, with the real binary and model: watched folders, feeds served from
//! 127.0.0.1 (good ones, and ones that fail in every way a feed fails), saved searches that
//! alert once, stories that keep their ids, and kills at any moment.

mod common;

use common::{likewise, stdout_of};
use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The seeds' articles: (headline, paragraphs).
fn seed_articles() -> Vec<(String, Vec<String>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(common::seeds())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let parsed = likewise::text::parse_article_text(&std::fs::read_to_string(f).unwrap());
            (parsed.title, parsed.paragraphs)
        })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An RSS item: guid, title, HTML paragraphs (as `content:encoded`).
#[derive(Clone)]
struct Item {
    guid: String,
    title: String,
    paragraphs: Vec<String>,
}

fn rss(items: &[Item]) -> String {
    let mut out = String::from(
        r#"<?xml version="1.0" encoding="utf-8"?><rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel><title>Test Wire</title><link>http://127.0.0.1/</link>"#,
    );
    for it in items {
        let html: String = it
            .paragraphs
            .iter()
            .map(|p| format!("<p>{}</p>", escape(p)))
            .collect();
        out.push_str(&format!(
            "<item><title>{}</title><guid isPermaLink=\"false\">{}</guid><link>http://127.0.0.1/story/{}</link><pubDate>Sat, 23 Mar 2024 10:00:00 GMT</pubDate><description>{}</description><content:encoded><![CDATA[{}]]></content:encoded></item>",
            escape(&it.title),
            it.guid,
            it.guid,
            escape(&it.paragraphs[0]),
            html
        ));
    }
    out.push_str("</channel></rss>");
    out
}

/// A small HTTP/1.1 server on 127.0.0.1: a live feed (with ETag and 304), a summary-only feed
/// and its pages, and feeds that fail: 404, 500, an HTML page, broken XML, a redirect loop, an
/// answer too large, a compression bomb, and one that never finishes answering.
struct FeedServer {
    port: u16,
    items: Arc<Mutex<Vec<Item>>>,
    /// (path, whether the request was conditional, status answered).
    log: Arc<Mutex<Vec<(String, bool, u16)>>>,
}

impl FeedServer {
    fn start(items: Vec<Item>) -> FeedServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let items = Arc::new(Mutex::new(items));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (i2, l2) = (items.clone(), log.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (i3, l3) = (i2.clone(), l2.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(stream, &i3, &l3, port);
                });
            }
        });
        FeedServer { port, items, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn serve_one(
    mut stream: TcpStream,
    items: &Mutex<Vec<Item>>,
    log: &Mutex<Vec<(String, bool, u16)>>,
    port: u16,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut if_none_match = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("if-none-match:") {
            if_none_match = Some(v.trim().to_string());
        }
    }
    let conditional = if_none_match.is_some();
    let mut respond = |status: u16, headers: &[(&str, String)], body: &[u8]| {
        log.lock()
            .unwrap()
            .push((path.clone(), conditional, status));
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)
    };
    match path.as_str() {
        "/feed.xml" => {
            let body = rss(&items.lock().unwrap());
            let etag = format!("\"{:x}\"", {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                body.hash(&mut h);
                h.finish()
            });
            if if_none_match.as_deref() == Some(etag.as_str()) {
                respond(304, &[("ETag", etag)], b"")
            } else {
                respond(
                    200,
                    &[
                        ("ETag", etag),
                        ("Content-Type", "application/rss+xml".into()),
                    ],
                    body.as_bytes(),
                )
            }
        }
        "/summaries.xml" => {
            let body = format!(
                r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Summaries</title><item><title>Only a summary here</title><guid>summary-1</guid><link>http://127.0.0.1:{port}/page/1</link><description>A short summary.</description></item></channel></rss>"#
            );
            respond(200, &[], body.as_bytes())
        }
        "/page/1" => {
            let body = "<html><head><title>Page one</title></head><body><nav>Home | World | Sport</nav><article><h1>The whole story of page one</h1>\
                <p>The reservoir on the eastern plateau rose by four metres overnight after a week of unbroken rain, engineers at the dam said on Sunday morning.</p>\
                <p>Downstream villages were told to move livestock to higher ground while the spillway gates were opened in stages to relieve the pressure on the wall.</p>\
                <p>Officials said the structure was sound but that inspections would continue every hour until the inflow fell below the spillway capacity.</p>\
                </article><footer>Copyright</footer></body></html>";
            respond(
                200,
                &[("Content-Type", "text/html".into())],
                body.as_bytes(),
            )
        }
        "/404.xml" => respond(404, &[], b"not here"),
        "/500.xml" => respond(500, &[], b"broken server"),
        "/html.xml" => respond(
            200,
            &[],
            b"<!DOCTYPE html><html><body><p>Not a feed</p></body></html>",
        ),
        "/broken.xml" => respond(
            200,
            &[],
            b"<?xml version=\"1.0\"?><rss><channel><item><title>cut off",
        ),
        "/loop.xml" => respond(
            302,
            &[("Location", format!("http://127.0.0.1:{port}/loop.xml"))],
            b"",
        ),
        "/huge.xml" => respond(200, &[], &vec![b'x'; 3 << 20]),
        "/bomb.xml" => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&vec![b' '; 64 << 20])?;
            let body = gz.finish()?;
            respond(200, &[("Content-Encoding", "gzip".into())], &body)
        }
        "/slow.xml" => {
            log.lock().unwrap().push((path.clone(), conditional, 0));
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n<rss>")?;
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        }
        _ => respond(404, &[], b"no such path"),
    }
}

/// `likewise watch ARGS` on `store`, its events (JSON lines) read as they come.
struct Watcher {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
}

impl Watcher {
    fn start(store: &Path, args: &[&str]) -> Watcher {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("likewise"))
            .env("LIKEWISE_MODEL", common::model_dir())
            .env("LIKEWISE_INDEX", store)
            .current_dir(common::root())
            .arg("watch")
            .args(args)
            .args(["--format", "jsonl"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let e2 = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("watch printed a line that is not JSON ({e}): {line}")
                });
                e2.lock().unwrap().push(v);
            }
        });
        let err = child.stderr.take().unwrap();
        let s2 = stderr.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(err);
            let mut buf = String::new();
            while r.read_line(&mut buf).unwrap_or(0) > 0 {
                s2.lock().unwrap().push_str(&buf);
                buf.clear();
            }
        });
        Watcher {
            child,
            events,
            stderr,
        }
    }

    /// Waits (at most `limit`) for an event that `pred` accepts; panics with what was seen.
    fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + limit;
        loop {
            if let Some(v) = self.events.lock().unwrap().iter().find(|v| pred(v)) {
                return v.clone();
            }
            if Instant::now() > until {
                panic!(
                    "no {what} within {limit:?}; events: {:#?}\nstderr: {}",
                    self.events.lock().unwrap(),
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Waits for the watcher to exit by itself (`--stop-after`), successfully.
    fn finish(mut self) -> (Vec<Value>, String) {
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let stderr = self.stderr.lock().unwrap().clone();
        assert!(status.success(), "watch failed: {status}\n{stderr}");
        (self.events(), stderr)
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn json_of(cmd: &mut assert_cmd::Command) -> Value {
    serde_json::from_str(&stdout_of(cmd)).unwrap()
}

fn keys_of(store: &Path) -> Vec<String> {
    let s = likewise::store::Store::open(store).unwrap();
    let mut keys: Vec<String> = s.live_articles().map(|(_, r)| r.key.clone()).collect();
    keys.sort();
    keys
}

#[test]
fn feeds_are_read_politely_and_every_failing_feed_is_one_warning() {
    let seeds = seed_articles();
    let item = |n: usize| Item {
        guid: format!("wire-{n}"),
        title: seeds[n].0.clone(),
        paragraphs: seeds[n].1.clone(),
    };
    let server = FeedServer::start(vec![item(0), item(1), item(2)]);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let bad = [
        ("/404.xml", "HTTP 404"),
        ("/500.xml", "HTTP 500"),
        ("/html.xml", "HTML page"),
        ("/broken.xml", "not a readable RSS or Atom feed"),
        ("/loop.xml", "redirects"),
        ("/huge.xml", "larger than 1 MiB"),
        ("/bomb.xml", "larger than 1 MiB"),
        ("/slow.xml", "timed out"),
    ];
    let mut args: Vec<String> = vec!["--feed".into(), server.url("/feed.xml")];
    for (path, _) in bad {
        args.extend(["--feed".into(), server.url(path)]);
    }
    args.extend([
        "--feed".into(),
        server.url("/summaries.xml"),
        "--fetch-pages".into(),
        "--feed-interval".into(),
        "1".into(),
        "--feed-timeout".into(),
        "2".into(),
        "--max-feed-mib".into(),
        "1".into(),
        "--stop-after".into(),
        "12".into(),
    ]);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let w = Watcher::start(&store, &arg_refs);
    w.wait_for("the first entries", Duration::from_secs(60), |e| {
        e["event"] == "commit" && e["origin"] == server.url("/feed.xml")
    });
    // News arrives, and an entry is corrected.
    {
        let mut items = server.items.lock().unwrap();
        items.push(item(3));
        items[0]
            .paragraphs
            .push("Correction: this report was updated with a new paragraph.".into());
    }
    w.wait_for(
        "the new and the corrected entry",
        Duration::from_secs(30),
        |e| e["event"] == "commit" && e["new"] == 1 && e["changed"] == 1,
    );
    let (events, stderr) = w.finish();
    // Each failing feed: warned of with its reason, and polled again later (backoff), while the
    // good feeds went on.
    for (path, reason) in bad {
        let url = server.url(path);
        let errors: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "feed" && e["url"] == url.as_str() && !e["error"].is_null())
            .collect();
        assert!(
            !errors.is_empty(),
            "{path}: no failed poll reported\n{stderr}"
        );
        let message = errors[0]["error"].as_str().unwrap();
        assert!(
            message.contains(reason),
            "{path}: {message:?} should say {reason:?}"
        );
        assert!(
            stderr.contains(&format!("feed {url}: ")),
            "{path}: no warning on stderr:\n{stderr}"
        );
    }
    // Polite: the live feed was asked conditionally and answered 304 when nothing changed.
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|(p, conditional, status)| p == "/feed.xml" && *conditional && *status == 304),
        "no conditional request answered 304: {log:?}"
    );
    // Backoff: a failing feed is polled less often than the good one.
    let polls = |p: &str| log.iter().filter(|(q, _, _)| q == p).count();
    assert!(polls("/500.xml") < polls("/feed.xml"), "{log:?}");
    // The entries are articles keyed by guid (scoped by their feed: these guids are not URLs),
    // the correction replaced its older version, and the summary-only entry holds its page's
    // article text.
    let feed = server.url("/feed.xml");
    let key = |guid: &str| format!("{feed}#{guid}");
    let summary_key = format!("{}#summary-1", server.url("/summaries.xml"));
    let keys = keys_of(&store);
    assert_eq!(
        keys,
        ["wire-0", "wire-1", "wire-2", "wire-3"]
            .map(key)
            .into_iter()
            .chain([summary_key.clone()])
            .collect::<Vec<_>>()
    );
    let s = likewise::store::Store::open(&store).unwrap();
    let updated = s.article(s.find_key(&key("wire-0")).unwrap());
    assert_eq!(updated.meta.source.as_deref(), Some("Test Wire"));
    let paragraphs = likewise::articles::paragraphs(&s, s.find_key(&key("wire-0")).unwrap());
    assert!(paragraphs.last().unwrap().text.starts_with("Correction:"));
    let page = likewise::articles::paragraphs(&s, s.find_key(&summary_key).unwrap());
    assert!(
        page.iter().any(|p| p.text.contains("spillway gates")),
        "the page's text was not stored: {page:?}"
    );
    assert!(
        page.iter().all(|p| !p.text.contains("Home | World")),
        "{page:?}"
    );
    drop(s);

    // Started again, it resumes: nothing stored twice, the feed asked conditionally at once.
    let before = server.log.lock().unwrap().len();
    let w = Watcher::start(
        &store,
        &[
            "--feed",
            &server.url("/feed.xml"),
            "--feed-interval",
            "60",
            "--stop-after",
            "4",
        ],
    );
    let (events, _) = w.finish();
    assert!(events.iter().all(|e| e["event"] != "commit"), "{events:#?}");
    assert_eq!(keys_of(&store).len(), 5);
    let log = server.log.lock().unwrap().clone();
    assert!(
        log[before..]
            .iter()
            .any(|(p, c, st)| p == "/feed.xml" && *c && *st == 304),
        "the restarted watcher did not resume with the feed's validators: {:?}",
        &log[before..]
    );
    // A feed that is not http(s) is refused before anything starts.
    let err = common::stderr_with_code(
        likewise(&store).args(["watch", "--feed", "file:///etc/passwd"]),
        1,
    );
    assert!(err.contains("only http:// and https:// URLs"), "{err}");
}

fn copy_seed(n: usize, to: &Path) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(common::seeds())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    std::fs::copy(&files[n], to).unwrap();
}

#[test]
fn a_watched_folder_alerts_once_per_story_copy_and_keeps_story_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let news = tmp.path().join("news");
    std::fs::create_dir_all(&news).unwrap();
    for n in 0..3 {
        copy_seed(n, &news.join(format!("{n:03}.txt")));
    }
    let store = tmp.path().join("store");
    likewise(&store).arg("index").arg(&news).assert().success();
    let stories_before =
        json_of(likewise(&store).args(["stories", "--min-size", "1", "--format", "json"]));
    let id_of = |stories: &Value, key_end: &str| -> u64 {
        let s = &stories["stories"];
        s.as_array()
            .unwrap()
            .iter()
            .find(|st| {
                st["first"]["key"].as_str().unwrap().ends_with(key_end)
                    || st["last"]["key"].as_str().unwrap().ends_with(key_end)
            })
            .unwrap_or_else(|| panic!("no story holds {key_end}: {stories:#}"))["id"]
            .as_u64()
            .unwrap()
    };
    let rafah_story = id_of(&stories_before, "002.txt");
    likewise(&store)
        .args([
            "alerts",
            "add",
            "rafah",
            "ground operation in Rafah would be a mistake",
        ])
        .assert()
        .success();
    likewise(&store)
        .args(["alerts", "add", "shoukry", "Shoukry", "--mode", "lexical"])
        .assert()
        .success();
    likewise(&store)
        .args([
            "alerts",
            "add",
            "follow-rafah",
            "--story",
            &rafah_story.to_string(),
        ])
        .assert()
        .success();
    // Wrong use: a name taken, a bad name, an unknown story, nothing to follow.
    let err = common::stderr_with_code(likewise(&store).args(["alerts", "add", "rafah", "x"]), 1);
    assert!(err.contains("already named \"rafah\""), "{err}");
    let err = common::stderr_with_code(likewise(&store).args(["alerts", "add", "a b", "x"]), 1);
    assert!(err.contains("not a saved search's name"), "{err}");
    let err = common::stderr_with_code(
        likewise(&store).args(["alerts", "add", "s", "--story", "999"]),
        1,
    );
    assert!(err.contains("no story 999"), "{err}");
    let err = common::stderr_with_code(likewise(&store).args(["alerts", "add", "nothing"]), 1);
    assert!(err.contains("give the saved search a text"), "{err}");
    let listed = json_of(likewise(&store).args(["alerts", "list", "--format", "json"]));
    assert_eq!(listed.as_array().unwrap().len(), 3);

    let w = Watcher::start(&store, &[news.to_str().unwrap(), "--stop-after", "25"]);
    w.wait_for("ready", Duration::from_secs(60), |e| e["event"] == "ready");
    // A saved search added while the watcher runs is taken into account from the next commit.
    likewise(&store)
        .args(["alerts", "add", "herzog", "Herzog", "--mode", "lexical"])
        .assert()
        .success();
    let arrived = Instant::now();
    copy_seed(3, &news.join("003.txt"));
    copy_seed(4, &news.join("004.txt"));
    w.wait_for("the new articles' alerts", Duration::from_secs(30), |e| {
        e["event"] == "alert" && e["search"] == "shoukry"
    });
    let latency = arrived.elapsed();
    // The same wire story again, under another name: a copy, not news.
    copy_seed(4, &news.join("004-copy.txt"));
    w.wait_for("the copy's commit", Duration::from_secs(30), |e| {
        e["event"] == "commit"
            && e["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k.as_str().unwrap().ends_with("004-copy.txt"))
    });
    // A removed file leaves the store.
    std::fs::remove_file(news.join("001.txt")).unwrap();
    w.wait_for("the removal", Duration::from_secs(30), |e| {
        e["event"] == "commit" && e["removed"] == 1
    });
    let (events, stderr) = w.finish();
    eprintln!("arrival to alert: {latency:?}");

    let alerts = json_of(likewise(&store).args(["alerts", "show", "--format", "json"]));
    let alerts = alerts.as_array().unwrap();
    let pairs: Vec<(String, String)> = alerts
        .iter()
        .map(|a| {
            (
                a["search"].as_str().unwrap().to_string(),
                a["key"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    let unique: HashSet<&(String, String)> = pairs.iter().collect();
    assert_eq!(
        unique.len(),
        pairs.len(),
        "an alert recorded twice: {pairs:?}"
    );
    let ids: HashSet<&str> = alerts.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), alerts.len());
    let has = |search: &str, file: &str| pairs.contains(&(search.to_string(), file.to_string()));
    assert!(has("shoukry", "003.txt"), "{pairs:?}\n{stderr}");
    assert!(
        !has("shoukry", "004.txt"),
        "004 never names Shoukry: {pairs:?}"
    );
    // 000 was there before: only new articles alert.
    assert!(!has("herzog", "000.txt"), "{pairs:?}");
    assert!(
        has("rafah", "004.txt") || has("rafah", "003.txt"),
        "{pairs:?}"
    );
    assert!(
        has("follow-rafah", "003.txt") && has("follow-rafah", "004.txt"),
        "{pairs:?}"
    );
    // The copy alerted nobody: it is named under the alert of its original.
    assert!(!pairs.iter().any(|p| p.1 == "004-copy.txt"), "{pairs:?}");
    // Articles already there before alerts were saved never alert.
    assert!(!pairs.iter().any(|p| p.1 == "002.txt"), "{pairs:?}");
    // Every event went to stdout as JSON, alerts among them.
    assert!(events.iter().any(|e| e["event"] == "alert"));

    // Story ids kept their meaning: the Rafah story still holds 002, now with 003 and 004.
    let after = json_of(likewise(&store).args(["stories", "--min-size", "1", "--format", "json"]));
    assert_eq!(id_of(&after, "002.txt"), rafah_story);
    let timeline =
        json_of(likewise(&store).args(["story", &rafah_story.to_string(), "--format", "json"]));
    let entries = timeline["timeline"].as_array().unwrap();
    let keys: Vec<&str> = entries.iter().map(|e| e["key"].as_str().unwrap()).collect();
    // The same story, asked for by one of its articles.
    let by_article = json_of(likewise(&store).args([
        "story",
        "--article",
        news.join("003.txt").to_str().unwrap(),
        "--format",
        "json",
    ]));
    assert_eq!(by_article["story"]["id"], rafah_story, "{by_article:#}");
    assert!(
        keys.iter().any(|k| k.ends_with("003.txt")) && keys.iter().any(|k| k.ends_with("004.txt")),
        "{timeline:#}"
    );
    let copies: Vec<Value> = entries
        .iter()
        .flat_map(|e| e["copies"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(
        copies
            .iter()
            .any(|c| c["key"].as_str().unwrap().ends_with("004-copy.txt")),
        "the copy is not collapsed under its original: {timeline:#}"
    );
    assert!(entries
        .iter()
        .skip(1)
        .any(|e| e["adds"].as_array().is_some_and(|a| !a.is_empty())));
    // The removed article left its story; 001's story id still resolves (or is gone with it).
    assert!(!keys_of(&store).iter().any(|k| k.ends_with("001.txt")));

    // Saved searches come and go; their alerts stay.
    likewise(&store)
        .args(["alerts", "remove", "rafah"])
        .assert()
        .success();
    let err = common::stderr_with_code(likewise(&store).args(["alerts", "remove", "rafah"]), 1);
    assert!(err.contains("no saved search named \"rafah\""), "{err}");
    let shown = json_of(likewise(&store).args(["alerts", "show", "rafah", "--format", "json"]));
    assert!(!shown.as_array().unwrap().is_empty());
}

/// Writes article `i`: a headline and two paragraphs of the seeds (different ones for each
/// article that names the "Kestrel" inquiry — one in three, what the saved search follows — so
/// none of them is a copy of another).
fn write_article(dir: &Path, i: usize, paragraphs: &[String]) {
    let (headline, first) = if i.is_multiple_of(3) {
        (
            format!("Item {i}: the Kestrel inquiry hears new evidence"),
            2 * (i / 3),
        )
    } else {
        (
            format!("Item {i}: more on the talks"),
            (7 * i) % paragraphs.len(),
        )
    };
    let text = format!(
        "{headline}\n\n{}\n\n{}\n",
        paragraphs[first % paragraphs.len()],
        paragraphs[(first + 1) % paragraphs.len()]
    );
    std::fs::write(dir.join(format!("{i:04}.txt")), text).unwrap();
}

#[test]
fn killing_the_watcher_at_any_moment_loses_nothing_and_doubles_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let news = tmp.path().join("news");
    std::fs::create_dir_all(&news).unwrap();
    let paragraphs: Vec<String> = seed_articles()
        .into_iter()
        .flat_map(|(_, p)| p)
        .filter(|p| p.split_whitespace().count() >= 12)
        .collect();
    for i in 0..30 {
        write_article(&news, i, &paragraphs);
    }
    let store = tmp.path().join("store");
    likewise(&store).arg("index").arg(&news).assert().success();
    likewise(&store)
        .args(["alerts", "add", "kestrel", "Kestrel", "--mode", "lexical"])
        .assert()
        .success();
    let mut next = 30;
    let mut rng = 12345u64;
    let mut random = |n: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % n
    };
    for round in 0..8 {
        let w = Watcher::start(&store, &[news.to_str().unwrap(), "--rescan", "2"]);
        // Articles arrive before, while and after the watcher starts.
        for _ in 0..4 {
            write_article(&news, next, &paragraphs);
            next += 1;
            std::thread::sleep(Duration::from_millis(random(400)));
        }
        std::thread::sleep(Duration::from_millis(random(1500)));
        let _ = round;
        w.kill();
    }
    // A last run catches up with whatever the kills left.
    let w = Watcher::start(&store, &[news.to_str().unwrap(), "--stop-after", "6"]);
    w.finish();

    // Every file is one article, once.
    let keys = keys_of(&store);
    assert_eq!(keys.len(), next, "articles lost or doubled: {keys:?}");
    // Every article is in exactly one story.
    let stories =
        json_of(likewise(&store).args(["stories", "--min-size", "1", "--format", "json"]));
    let placed: usize = stories["stories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["size"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(placed, next, "{stories:#}");
    // Every article about the inquiry that arrived after the search was saved alerted once,
    // and nothing else did.
    let alerts = json_of(likewise(&store).args(["alerts", "show", "kestrel", "--format", "json"]));
    let mut alerted: Vec<String> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a["key"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let n = alerted.len();
    alerted.sort();
    alerted.dedup();
    assert_eq!(alerted.len(), n, "an alert recorded twice");
    let expected: HashSet<String> = (30..next)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("{i:04}.txt"))
        .collect();
    let got: HashSet<String> = alerted.into_iter().collect();
    assert_eq!(
        got, expected,
        "alerts lost or made for articles that do not match"
    );
    let mut log = Vec::new();
    std::fs::File::open(store.join("alerts.log"))
        .unwrap()
        .read_to_end(&mut log)
        .unwrap();
    assert!(log.ends_with(b"\n"));
}

/// What a webhook receiver saw: (body, Idempotency-Key, status answered) per request.
type Deliveries = Arc<Mutex<Vec<(String, Option<String>, u16)>>>;

/// A webhook receiver on 127.0.0.1 that refuses the first delivery (500) and accepts the next
/// ones.
fn webhook_receiver() -> (u16, Deliveries) {
    webhook_receiver_while(Arc::new(AtomicBool::new(false)))
}

/// A webhook receiver on 127.0.0.1 that answers 503 while `down` is set; once up, it refuses
/// the first delivery it ever saw (500) and accepts the next ones.
fn webhook_receiver_while(down: Arc<AtomicBool>) -> (u16, Deliveries) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            let mut key = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("idempotency-key:") {
                    key = Some(line.split_once(':').unwrap().1.trim().to_string());
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let mut log = g2.lock().unwrap();
            let status = if down.load(Ordering::SeqCst) {
                503
            } else if log.is_empty() {
                500
            } else {
                204
            };
            log.push((String::from_utf8_lossy(&body).into_owned(), key, status));
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, got)
}

#[test]
fn a_server_that_watches_streams_alerts_and_serves_saved_searches_and_stories() {
    let tmp = tempfile::tempdir().unwrap();
    let news = tmp.path().join("news");
    std::fs::create_dir_all(&news).unwrap();
    for n in 0..3 {
        copy_seed(n, &news.join(format!("{n:03}.txt")));
    }
    let store = tmp.path().join("store");
    likewise(&store).arg("index").arg(&news).assert().success();
    let (hook_port, hooks) = webhook_receiver();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(assert_cmd::cargo::cargo_bin("likewise"))
        .env("LIKEWISE_MODEL", common::model_dir())
        .env("LIKEWISE_INDEX", &store)
        .current_dir(common::root())
        .args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--allow-index",
            "--watch",
        ])
        .arg(&news)
        .args(["--webhook", &format!("http://127.0.0.1:{hook_port}/hook")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(server.child_stdout())
        .read_line(&mut first)
        .unwrap();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let call = |method: &str, path: &str, body: Option<&str>| -> (u16, Value) {
        let req = agent.request(method, &format!("{base}{path}"));
        let r = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        let r = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = r.status();
        (
            status,
            serde_json::from_str(&r.into_string().unwrap()).unwrap(),
        )
    };
    // Saved searches through the API; bad ones refused with the reason.
    let (status, saved) = call(
        "POST",
        "/api/alerts",
        Some(r#"{"name": "shoukry", "query": {"text": "Shoukry", "mode": "lexical"}}"#),
    );
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["name"], "shoukry");
    assert!(saved.get("vector").is_none());
    let (status, err) = call(
        "POST",
        "/api/alerts",
        Some(r#"{"name": "x y", "query": {"text": "a"}}"#),
    );
    assert_eq!(status, 400, "{err}");
    let (status, err) = call(
        "POST",
        "/api/alerts",
        Some(r#"{"name": "w", "webhook": "http://127.0.0.1:1/"}"#),
    );
    assert_eq!(status, 400, "a request cannot set a webhook: {err}");
    let (status, list) = call("GET", "/api/alerts", None);
    assert_eq!((status, list.as_array().unwrap().len()), (200, 1));

    // The live stream: an article lands in the watched folder, its alert comes down the stream.
    let stream = agent
        .get(&format!("{base}/api/alerts/stream"))
        .call()
        .unwrap();
    assert_eq!(stream.content_type(), "text/event-stream");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stream.into_reader())
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    copy_seed(3, &news.join("003.txt"));
    let until = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    let alert = loop {
        let line = rx
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no alert on the stream; it said: {lines:#?}"));
        lines.push(line.clone());
        if line == "event: alert" {
            let data = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            break serde_json::from_str::<Value>(data.strip_prefix("data: ").unwrap()).unwrap();
        }
    };
    assert_eq!(alert["search"], "shoukry");
    assert!(alert["key"].as_str().unwrap().ends_with("003.txt"));
    assert!(lines.iter().any(|l| l == "event: commit"), "{lines:#?}");
    // The log, the stories and a timeline.
    let (status, log) = call("GET", "/api/alerts/log?search=shoukry", None);
    assert_eq!(status, 200);
    assert_eq!(log.as_array().unwrap().len(), 1);
    let (status, stories) = call("GET", "/api/stories?min_size=1", None);
    assert_eq!(status, 200, "{stories}");
    let id = stories["stories"][0]["id"].as_u64().unwrap();
    let (status, timeline) = call("GET", &format!("/api/stories/{id}"), None);
    assert_eq!(status, 200, "{timeline}");
    assert_eq!(timeline["story"]["id"], id);
    let (status, _) = call("GET", "/api/stories/999999", None);
    assert_eq!(status, 404);
    let (status, _) = call("GET", "/api/stories/abc", None);
    assert_eq!(status, 400);
    // The webhook got the alert on its second try, with the alert's id as its key.
    let until = Instant::now() + Duration::from_secs(20);
    while hooks.lock().unwrap().len() < 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = hooks.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].2, got[1].2), (500, 204));
    assert_eq!(got[1].1.as_deref(), alert["id"].as_str());
    assert_eq!(got[0].0, got[1].0);
    // Removing: only where writes are allowed; the alerts stay.
    let (status, _) = call("DELETE", "/api/alerts/shoukry", None);
    assert_eq!(status, 200);
    let (status, _) = call("DELETE", "/api/alerts/shoukry", None);
    assert_eq!(status, 404);
    let (_, log) = call("GET", "/api/alerts/log", None);
    assert_eq!(log.as_array().unwrap().len(), 1);
    server.kill().unwrap();
    server.wait().unwrap();

    // A read-only server lists but does not change saved searches.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(assert_cmd::cargo::cargo_bin("likewise"))
        .env("LIKEWISE_MODEL", common::model_dir())
        .env("LIKEWISE_INDEX", &store)
        .current_dir(common::root())
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(server.child_stdout())
        .read_line(&mut first)
        .unwrap();
    let r = agent
        .post(&format!("http://127.0.0.1:{port}/api/alerts"))
        .send_string(r#"{"name": "a", "query": {"text": "Rafah"}}"#);
    assert!(matches!(r, Err(ureq::Error::Status(403, _))));
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn webhooks_get_every_alert_at_least_once_across_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let news = tmp.path().join("news");
    std::fs::create_dir_all(&news).unwrap();
    for n in 0..3 {
        copy_seed(n, &news.join(format!("{n:03}.txt")));
    }
    let store = tmp.path().join("store");
    likewise(&store).arg("index").arg(&news).assert().success();
    likewise(&store)
        .args(["alerts", "add", "shoukry", "Shoukry", "--mode", "lexical"])
        .assert()
        .success();
    let down = Arc::new(AtomicBool::new(true));
    let (port, hooks) = webhook_receiver_while(down.clone());
    let hook = format!("http://127.0.0.1:{port}/hook");
    let folder = news.to_str().unwrap();

    // The receiver is down when the alert is recorded; the watcher is killed while it retries.
    let w = Watcher::start(&store, &[folder, "--webhook", &hook]);
    w.wait_for("ready", Duration::from_secs(60), |v| v["event"] == "ready");
    copy_seed(3, &news.join("003.txt"));
    let alert = w.wait_for("alert", Duration::from_secs(30), |v| v["event"] == "alert");
    let until = Instant::now() + Duration::from_secs(20);
    while hooks.lock().unwrap().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    w.kill();
    let refused = hooks.lock().unwrap().clone();
    assert!(!refused.is_empty(), "the webhook was never tried");
    assert!(refused.iter().all(|d| d.2 == 503), "{refused:?}");

    // Up again: the next run delivers the alert, with the same id as its key.
    down.store(false, Ordering::SeqCst);
    Watcher::start(&store, &[folder, "--webhook", &hook, "--stop-after", "5"]).finish();
    let got = hooks.lock().unwrap().clone();
    let accepted: Vec<_> = got[refused.len()..].iter().filter(|d| d.2 == 204).collect();
    assert_eq!(accepted.len(), 1, "{got:?}");
    assert_eq!(accepted[0].1.as_deref(), alert["id"].as_str());
    let body: Value = serde_json::from_str(&accepted[0].0).unwrap();
    assert_eq!(body["id"], alert["id"]);
    assert_eq!(body["search"], "shoukry");

    // Delivered means delivered: a further run sends nothing again.
    Watcher::start(&store, &[folder, "--webhook", &hook, "--stop-after", "2"]).finish();
    assert_eq!(hooks.lock().unwrap().len(), got.len());

    // A webhook configured later gets what comes from then on, not the history.
    let (port2, hooks2) = webhook_receiver();
    let hook2 = format!("http://127.0.0.1:{port2}/hook");
    Watcher::start(&store, &[folder, "--webhook", &hook2, "--stop-after", "2"]).finish();
    assert!(hooks2.lock().unwrap().is_empty());
    let cursors: Value =
        serde_json::from_slice(&std::fs::read(store.join("webhooks.json")).unwrap()).unwrap();
    assert!(
        cursors.get(&hook).is_some() && cursors.get(&hook2).is_some(),
        "{cursors}"
    );

    // A damaged cursor file is a warning, not a stop.
    std::fs::write(store.join("webhooks.json"), "{ not json").unwrap();
    let (_, stderr) =
        Watcher::start(&store, &[folder, "--webhook", &hook, "--stop-after", "2"]).finish();
    assert!(stderr.contains("webhooks.json"), "{stderr}");
}

trait ChildStdout {
    fn child_stdout(&mut self) -> std::process::ChildStdout;
}

impl ChildStdout for Child {
    fn child_stdout(&mut self) -> std::process::ChildStdout {
        self.stdout.take().unwrap()
    }
}

#[test]
fn a_damaged_follow_state_is_named_and_the_articles_still_go_in() {
    let tmp = tempfile::tempdir().unwrap();
    let news = tmp.path().join("news");
    std::fs::create_dir_all(&news).unwrap();
    copy_seed(0, &news.join("000.txt"));
    let store = tmp.path().join("store");
    likewise(&store).arg("index").arg(&news).assert().success();
    let follow = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("follow-")
        })
        .expect("a follow state beside the segments");
    let len = std::fs::metadata(&follow).unwrap().len() as usize;
    std::fs::write(&follow, vec![b'#'; len]).unwrap();
    let err = common::stderr_with_code(likewise(&store).arg("verify"), 5);
    assert!(
        err.contains(follow.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    let err = common::stderr_with_code(likewise(&store).arg("stories"), 5);
    assert!(err.contains("not a follow state"), "{err}");
    // New articles still go in, with a warning naming what waits.
    copy_seed(1, &news.join("001.txt"));
    let out = likewise(&store)
        .arg("index")
        .arg(&news)
        .assert()
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("their stories and alerts are not"),
        "{stderr}"
    );
    assert_eq!(keys_of(&store).len(), 2);
}
