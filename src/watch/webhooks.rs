//! Alerts POSTed to the operator's webhooks, at least once, across kills.
//!
//! Each webhook has a thread that follows the store's committed alert log (the manifest says
//! how much of it is committed) and POSTs every alert past its cursor, in order. The cursor —
//! how many bytes of the log the webhook has been given — is kept in `webhooks.json` in the
//! store's folder and moved only after the receiver accepted the alert (a 2xx answer) or
//! [`WEBHOOK_TRIES`] tries failed. So a watcher killed while an alert is on its way, or while
//! the receiver is down, sends it again when it starts; the `Idempotency-Key` header carries the
//! alert's id, so a receiver that saw it already drops the repeat. A webhook seen for the first
//! time starts at the end of the log: it gets the alerts recorded from then on, not the history.
//!
//! Only the process that holds the store's writer lock runs these threads (a watcher), so one
//! cursor file has one writer.

use crate::engine::follow::AlertRecord;
use crate::engine::EngineError;
use crate::ingest::feeds::FetchLimits;
use crate::store::{atomic_write, read_alert_log_from, read_manifest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The cursor file, in the store's folder.
pub const WEBHOOK_CURSORS: &str = "webhooks.json";

/// Tries of one alert to one webhook before it is given up (with a warning).
pub const WEBHOOK_TRIES: u32 = 6;

/// How often a webhook's thread looks for newly committed alerts.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Where one webhook stands in the alert log.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct Cursor {
    /// Bytes of `alerts.log` whose alerts were delivered (or given up).
    delivered_bytes: u64,
}

/// The delivery threads; dropping this stops them at their next step without waiting for a
/// POST in flight (an alert not yet accepted is sent again by the next run: its cursor did not
/// move).
pub struct Webhooks {
    halt: Arc<AtomicBool>,
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        self.halt.store(true, Ordering::SeqCst);
    }
}

impl Webhooks {
    /// Starts one delivery thread per URL for the store in `dir`. A cursor file that cannot be
    /// read is a warning (through `warn`), and every webhook then starts at the log's end.
    pub fn start(
        dir: &Path,
        urls: &[String],
        limits: FetchLimits,
        warn: &(dyn Fn(String) + Sync),
    ) -> Result<Webhooks, EngineError> {
        let halt = Arc::new(AtomicBool::new(false));
        if urls.is_empty() {
            return Ok(Webhooks { halt });
        }
        let committed = read_manifest(dir)?.map_or(0, |m| m.alert_log_bytes);
        let mut cursors = match load_cursors(dir) {
            Ok(c) => c,
            Err(reason) => {
                warn(format!(
                    "{}: {reason}; webhooks start from the alerts recorded from now on",
                    dir.join(WEBHOOK_CURSORS).display()
                ));
                BTreeMap::new()
            }
        };
        let mut changed = false;
        for url in urls {
            let c = cursors.entry(url.clone()).or_insert_with(|| {
                changed = true;
                Cursor {
                    delivered_bytes: committed,
                }
            });
            if c.delivered_bytes > committed {
                // The log is shorter than the cursor: the store was made anew.
                warn(format!(
                    "webhook {url}: its cursor is past the end of the alert log; it starts at the end"
                ));
                c.delivered_bytes = committed;
                changed = true;
            }
        }
        if changed {
            save_cursors(dir, &cursors)?;
        }
        let cursors = Arc::new(Mutex::new(cursors));
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(limits.timeout)
            .timeout(limits.timeout)
            .redirects(0)
            .user_agent(concat!("likewise/", env!("CARGO_PKG_VERSION")))
            .build();
        for url in urls {
            let delivery = Delivery {
                dir: dir.to_path_buf(),
                url: url.clone(),
                agent: agent.clone(),
                cursors: cursors.clone(),
                halt: halt.clone(),
            };
            std::thread::spawn(move || delivery.run());
        }
        Ok(Webhooks { halt })
    }
}

fn load_cursors(dir: &Path) -> Result<BTreeMap<String, Cursor>, String> {
    match std::fs::read(dir.join(WEBHOOK_CURSORS)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("not a cursor file: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e.to_string()),
    }
}

fn save_cursors(dir: &Path, cursors: &BTreeMap<String, Cursor>) -> Result<(), EngineError> {
    let bytes = serde_json::to_vec_pretty(cursors).expect("cursors serialise");
    Ok(atomic_write(dir, WEBHOOK_CURSORS, &bytes)?)
}

/// One webhook's thread.
struct Delivery {
    dir: PathBuf,
    url: String,
    agent: ureq::Agent,
    cursors: Arc<Mutex<BTreeMap<String, Cursor>>>,
    halt: Arc<AtomicBool>,
}

/// What became of one alert.
enum Sent {
    Accepted,
    GivenUp,
    /// The watcher stops: the alert stays for the next run.
    Halted,
}

impl Delivery {
    fn run(self) {
        while !self.halt.load(Ordering::SeqCst) {
            if let Err(e) = self.deliver_pending() {
                eprintln!("likewise: warning: webhook {}: {e}", self.url);
            }
            std::thread::sleep(LOOK_EVERY);
        }
    }

    fn cursor(&self) -> u64 {
        self.cursors.lock().unwrap_or_else(|p| p.into_inner())[&self.url].delivered_bytes
    }

    /// POSTs every committed alert past the cursor, moving the cursor after each.
    fn deliver_pending(&self) -> Result<(), EngineError> {
        let Some(manifest) = read_manifest(&self.dir)? else {
            return Ok(());
        };
        let mut at = self.cursor();
        if manifest.alert_log_bytes <= at {
            return Ok(());
        }
        let log = read_alert_log_from(&self.dir, &manifest, at)?;
        for line in log.split_inclusive(|&b| b == b'\n') {
            let next = at + line.len() as u64;
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            if !body.is_empty() {
                let id = serde_json::from_slice::<AlertRecord>(body)
                    .map(|a| a.id)
                    .map_err(|e| {
                        EngineError::Invalid(format!(
                            "the alert log has a line that is not an alert ({e}); it is skipped"
                        ))
                    });
                let sent = match id {
                    Ok(id) => self.send(&id, body),
                    Err(e) => {
                        eprintln!("likewise: warning: webhook {}: {e}", self.url);
                        Sent::GivenUp
                    }
                };
                if let Sent::Halted = sent {
                    return Ok(());
                }
            }
            at = next;
            let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
            cursors.insert(
                self.url.clone(),
                Cursor {
                    delivered_bytes: at,
                },
            );
            save_cursors(&self.dir, &cursors)?;
        }
        Ok(())
    }

    /// Tries one alert until it is accepted, with a wait doubling from one second.
    fn send(&self, id: &str, body: &[u8]) -> Sent {
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=WEBHOOK_TRIES {
            let answer = self
                .agent
                .post(&self.url)
                .set("Content-Type", "application/json")
                .set("Idempotency-Key", id)
                .send_bytes(body);
            let error = match answer {
                Ok(r) if (200..300).contains(&r.status()) => return Sent::Accepted,
                Ok(r) => format!("answered {}", r.status()),
                Err(ureq::Error::Status(code, _)) => format!("answered {code}"),
                Err(e) => e.to_string(),
            };
            if attempt == WEBHOOK_TRIES {
                eprintln!(
                    "likewise: warning: webhook {}: alert {id} not delivered after {attempt} tries ({error}); it stays in the alert log",
                    self.url
                );
                return Sent::GivenUp;
            }
            // Sleep in small steps, so a stopping watcher is not held up by a dead receiver.
            let until = std::time::Instant::now() + wait;
            while std::time::Instant::now() < until {
                if self.halt.load(Ordering::SeqCst) {
                    return Sent::Halted;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            wait *= 2;
        }
        Sent::GivenUp
    }
}
