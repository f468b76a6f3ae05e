//! The durable per-session event log in sled. The `events` tree holds the events, keyed
//! `session/seq`, and beside them, keyed `session#key`, the idempotency keys that keep a
//! redelivered WhatsApp message from making a second event. The `event_floors` tree keeps the
//! highest seq retention dropped. Each session has exactly one writer, its `events` actor;
//! readers (pull, SSE, webhook workers) read the tree directly and wait for new events on the
//! session's head watch.
//!
//! Every write is a plain insert or remove: sled 0.34's batches and transactions take a global
//! lock that deadlocks against concurrent flushes under load. An event is written before its
//! key, and each event record carries its key, so after a crash the writer restores the keys
//! of the log's tail ([`EventLog::restore_keys`]) before it appends again.

use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};

use crate::error::Result;

/// Every event type of the contract, in its order.
pub const EVENT_TYPES: [&str; 9] = [
    "session.status",
    "message.received",
    "message.sent",
    "message.ack",
    "group.participants",
    "group.updated",
    "group.join_request",
    "group.joined",
    "group.left",
];

/// Whether `name` is one of the contract's event types.
pub fn is_event_type(name: &str) -> bool {
    EVENT_TYPES.contains(&name)
}

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: &'static str,
    /// Unix seconds when WhatsApp says it happened (or when wagate learned it).
    pub occurred_at: u64,
    pub data: Value,
    /// Identifies the WhatsApp thing that carried it; an event whose key is already in the log
    /// is not appended again.
    pub idempotency_key: Option<String>,
}

/// The envelope as every transport sends it.
#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    seq: u64,
    #[serde(rename = "type")]
    kind: &'a str,
    session: &'a str,
    occurred_at: u64,
    data: &'a Value,
}

/// One event as stored: its type and the envelope's exact bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub kind: String,
    pub appended_at: u64,
    pub envelope: Vec<u8>,
    idempotency_key: Option<String>,
}

impl StoredEvent {
    /// An event with only its seq, for tests of what is done with pages.
    #[cfg(test)]
    pub(crate) fn at_seq(seq: u64) -> Self {
        Self {
            seq,
            kind: "session.status".into(),
            appended_at: 0,
            envelope: Vec::new(),
            idempotency_key: None,
        }
    }

    /// `[appended_at u64][type len u8][type][key len u16][key][envelope]`.
    fn encode(&self) -> Vec<u8> {
        let key = self.idempotency_key.as_deref().unwrap_or("");
        let mut out = Vec::with_capacity(11 + self.kind.len() + key.len() + self.envelope.len());
        out.extend_from_slice(&self.appended_at.to_be_bytes());
        out.push(self.kind.len() as u8);
        out.extend_from_slice(self.kind.as_bytes());
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&self.envelope);
        out
    }

    fn decode(seq: u64, bytes: &[u8]) -> Option<Self> {
        let appended_at = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let kind_len = usize::from(*bytes.get(8)?);
        let kind = std::str::from_utf8(bytes.get(9..9 + kind_len)?).ok()?;
        let at = 9 + kind_len;
        let key_len = usize::from(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
        let key = std::str::from_utf8(bytes.get(at + 2..at + 2 + key_len)?).ok()?;
        Some(Self {
            seq,
            kind: kind.to_owned(),
            appended_at,
            envelope: bytes.get(at + 2 + key_len..)?.to_vec(),
            idempotency_key: (!key.is_empty()).then(|| key.to_owned()),
        })
    }
}

/// A page read from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub events: Vec<StoredEvent>,
    /// The highest seq looked at (the last returned, or further when a type filter skipped
    /// events); the next read continues after it.
    pub scanned_to: u64,
    /// The scan stopped at `max_scan` events with more of the log after `scanned_to`.
    pub cut_short: bool,
}

/// What a read may return: the oldest seq still held is above `after + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    pub oldest: u64,
}

fn prefix(session: &str) -> Vec<u8> {
    let mut p = session.as_bytes().to_vec();
    p.push(b'/');
    p
}

fn event_key(session: &str, seq: u64) -> Vec<u8> {
    let mut k = prefix(session);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The event a log entry holds, when its key and record are readable.
fn stored_event(key: &[u8], value: &[u8]) -> Option<StoredEvent> {
    StoredEvent::decode(seq_of(key)?, value)
}

fn seq_of(key: &[u8]) -> Option<u64> {
    let tail = key.get(key.len().checked_sub(8)?..)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

fn key_prefix(session: &str) -> Vec<u8> {
    let mut p = session.as_bytes().to_vec();
    p.push(b'#');
    p
}

fn idempotency_entry(session: &str, key: &str) -> Vec<u8> {
    let mut k = key_prefix(session);
    k.extend_from_slice(key.as_bytes());
    k
}

/// A fresh event id: `evt_` and a ULID (time-ordered, unique).
pub fn new_event_id() -> String {
    format!("evt_{}", ulid::Ulid::new())
}

pub struct EventLog {
    db: sled::Db,
    events: sled::Tree,
    floors: sled::Tree,
    heads: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Each head watch as it is made, for readers of every session.
    watches_opened: broadcast::Sender<HeadWatch>,
}

/// How many new head watches a reader of every session may fall behind by before it is cut off.
const OPENED_BACKLOG: usize = 1024;

/// A session's head watch as a reader of every session gets it: the newest durable seq when
/// it was taken, and the watch from then on.
#[derive(Clone)]
pub struct HeadWatch {
    pub session: String,
    pub head: u64,
    pub heads: watch::Receiver<u64>,
}

impl EventLog {
    pub fn open(db: &sled::Db) -> Result<Arc<Self>> {
        Ok(Arc::new(Self {
            events: db.open_tree("events")?,
            floors: db.open_tree("event_floors")?,
            db: db.clone(),
            heads: Mutex::new(HashMap::new()),
            watches_opened: broadcast::channel(OPENED_BACKLOG).0,
        }))
    }

    /// The highest seq retention has dropped (0 when none).
    pub fn floor(&self, session: &str) -> Result<u64> {
        Ok(self
            .floors
            .get(session.as_bytes())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Where a reader that named `after` starts; one that named none starts at the oldest event
    /// still held.
    pub fn read_from(&self, session: &str, after: Option<u64>) -> Result<u64> {
        match after {
            Some(after) => Ok(after),
            None => self.floor(session),
        }
    }

    /// The seq of the newest event ever appended (0 for an empty log).
    pub fn last_seq(&self, session: &str) -> Result<u64> {
        let last = self
            .events
            .scan_prefix(prefix(session))
            .keys()
            .next_back()
            .transpose()?
            .and_then(|k| seq_of(&k))
            .unwrap_or(0);
        Ok(last.max(self.floor(session)?))
    }

    /// Appends `events` from `next_seq` on, skipping those whose idempotency key is already
    /// in the log. Not flushed: the caller flushes before it acknowledges. Not atomic either
    /// (see the module's note): after an error the events before the failing one are written,
    /// and the writer reads its head back. Returns the events appended, with their seqs.
    pub fn append(
        &self,
        session: &str,
        next_seq: u64,
        events: &[NewEvent],
    ) -> Result<Vec<StoredEvent>> {
        let appended_at = crate::unix_now();
        let mut seq = next_seq;
        let mut out = Vec::with_capacity(events.len());
        let mut in_batch = HashSet::new();
        for event in events {
            let entry = match &event.idempotency_key {
                Some(key) => {
                    let entry = idempotency_entry(session, key);
                    // One writer per session: nothing can add this key between the read and
                    // the write.
                    if self.events.get(&entry)?.is_some() || !in_batch.insert(entry.clone()) {
                        continue;
                    }
                    Some(entry)
                }
                None => None,
            };
            let id = new_event_id();
            let envelope = serde_json::to_vec(&Envelope {
                id: &id,
                seq,
                kind: event.kind,
                session,
                occurred_at: event.occurred_at,
                data: &event.data,
            })?;
            let stored = StoredEvent {
                seq,
                kind: event.kind.to_owned(),
                appended_at,
                envelope,
                idempotency_key: event.idempotency_key.clone(),
            };
            self.events
                .insert(event_key(session, seq), stored.encode())?;
            if let Some(entry) = entry {
                self.events.insert(entry, &seq.to_be_bytes())?;
            }
            out.push(stored);
            seq += 1;
        }
        Ok(out)
    }

    /// The message event (`message.received` or `message.sent`) with WhatsApp id `id`, looked
    /// up through its idempotency key: first among `chat`'s messages, then, since a chat can be
    /// named by phone number or by LID, among all of the session's.
    pub fn find_message(&self, session: &str, chat: &str, id: &str) -> Result<Option<StoredEvent>> {
        let ends_with_id = |key: &[u8]| {
            key.strip_suffix(id.as_bytes())
                .is_some_and(|rest| rest.ends_with(&[0x1f]))
        };
        let all = idempotency_entry(session, &crate::event_data::message_key_prefix(None));
        let in_chat =
            idempotency_entry(session, &crate::event_data::message_key_prefix(Some(chat)));
        for prefix in [in_chat, all] {
            for item in self.events.scan_prefix(&prefix) {
                let (key, seq) = item?;
                if !ends_with_id(&key) {
                    continue;
                }
                let Some(seq) = <[u8; 8]>::try_from(seq.as_ref())
                    .ok()
                    .map(u64::from_be_bytes)
                else {
                    continue;
                };
                let key = event_key(session, seq);
                if let Some(event) = self
                    .events
                    .get(&key)?
                    .and_then(|value| stored_event(&key, &value))
                {
                    return Ok(Some(event));
                }
            }
        }
        Ok(None)
    }

    /// Writes back the idempotency keys of the last `tail` events, which a crash between an
    /// event and its key may have lost. Run by the writer before it appends.
    pub fn restore_keys(&self, session: &str, tail: usize) -> Result<usize> {
        let mut restored = 0;
        for item in self.events.scan_prefix(prefix(session)).rev().take(tail) {
            let (key, value) = item?;
            let Some(event) = stored_event(&key, &value) else {
                continue;
            };
            if let Some(k) = &event.idempotency_key {
                let entry = idempotency_entry(session, k);
                if self.events.get(&entry)?.is_none() {
                    self.events.insert(entry, &event.seq.to_be_bytes())?;
                    restored += 1;
                }
            }
        }
        Ok(restored)
    }

    /// Makes every append so far durable.
    pub async fn flush(&self) -> Result<()> {
        crate::store::flush_db(&self.db).await
    }

    /// Up to `limit` durable events after `after` whose type passes `types` (all when
    /// `None`), looking at most at `max_scan` events. `Err(Expired)` when events after `after`
    /// were already dropped by retention. Events past the published head are not read: until
    /// their flush, a crash could take them back and their seq would be given again.
    pub fn read(
        &self,
        session: &str,
        after: u64,
        limit: usize,
        types: Option<&[String]>,
        max_scan: usize,
    ) -> Result<std::result::Result<Page, Expired>> {
        let floor = self.floor(session)?;
        if after < floor {
            let oldest = self
                .events
                .scan_prefix(prefix(session))
                .keys()
                .next()
                .transpose()?
                .and_then(|k| seq_of(&k))
                .unwrap_or(floor + 1);
            return Ok(Err(Expired { oldest }));
        }
        let mut page = Page {
            events: Vec::new(),
            scanned_to: after,
            cut_short: false,
        };
        let durable = *self.head_sender(session)?.borrow();
        if durable <= after {
            return Ok(Ok(page));
        }
        let start = event_key(session, after + 1);
        let end = event_key(session, durable);
        for (scanned, item) in self.events.range(start..=end).enumerate() {
            if page.events.len() >= limit {
                break;
            }
            if scanned >= max_scan {
                page.cut_short = true;
                break;
            }
            let (key, value) = item?;
            let Some(seq) = seq_of(&key) else { continue };
            page.scanned_to = seq;
            let Some(event) = StoredEvent::decode(seq, &value) else {
                tracing::error!(session, seq, "skipping an unreadable event record");
                continue;
            };
            if types.is_none_or(|t| t.contains(&event.kind)) {
                page.events.push(event);
            }
        }
        Ok(Ok(page))
    }

    /// How many events of `types` follow `after`, and when the oldest of them was appended.
    /// Of all types it is one read; of some types a scan, counting at most `cap`.
    pub fn count_after(
        &self,
        session: &str,
        after: u64,
        types: Option<&[String]>,
        cap: usize,
    ) -> Result<(u64, Option<u64>)> {
        let durable = *self.head_sender(session)?.borrow();
        let start = event_key(session, after.saturating_add(1));
        let end = event_key(session, durable.max(after));
        if types.is_none() {
            // Seqs have no gaps and retention drops the oldest first: everything between the
            // floor (or `after`) and the head is there, so only the oldest needs reading.
            let count = durable.saturating_sub(after.max(self.floor(session)?));
            let oldest = match count {
                0 => None,
                _ => self
                    .events
                    .range(start..=end)
                    .next()
                    .transpose()?
                    .and_then(|(key, value)| stored_event(&key, &value))
                    .map(|event| event.appended_at),
            };
            return Ok((count, oldest));
        }
        let mut count = 0;
        let mut oldest = None;
        for item in self.events.range(start..=end).take(cap) {
            let (key, value) = item?;
            let Some(event) = stored_event(&key, &value) else {
                continue;
            };
            if types.is_none_or(|t| t.contains(&event.kind)) {
                count += 1;
                oldest.get_or_insert(event.appended_at);
            }
        }
        Ok((count, oldest))
    }

    /// Drops the session's events appended before `cutoff` (Unix seconds), oldest first,
    /// with their idempotency keys; raises the floor. Returns how many were dropped.
    pub fn expire(&self, session: &str, cutoff: u64) -> Result<usize> {
        let mut dropped = 0;
        let mut floor = None;
        let mut doomed = Vec::new();
        for item in self.events.scan_prefix(prefix(session)) {
            let (key, value) = item?;
            let Some(seq) = seq_of(&key) else { continue };
            match StoredEvent::decode(seq, &value) {
                Some(e) if e.appended_at >= cutoff => break,
                Some(e) => {
                    if let Some(k) = &e.idempotency_key {
                        doomed.push(idempotency_entry(session, k).into());
                    }
                }
                None => {}
            }
            doomed.push(key);
            floor = Some(seq);
            dropped += 1;
        }
        if let Some(floor) = floor {
            // The floor first: a crash in between leaves records below the floor, which
            // reads never return, rather than a gap that looks like an empty log.
            self.floors
                .insert(session.as_bytes(), &floor.to_be_bytes())?;
            for key in doomed {
                self.events.remove(key)?;
            }
        }
        Ok(dropped)
    }

    /// Erases a deleted session's log.
    pub fn delete_session(&self, session: &str) -> Result<()> {
        for p in [prefix(session), key_prefix(session)] {
            for key in self.events.scan_prefix(p).keys() {
                self.events.remove(key?)?;
            }
        }
        self.floors.remove(session.as_bytes())?;
        self.heads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session);
        Ok(())
    }

    fn head_sender(&self, session: &str) -> Result<watch::Sender<u64>> {
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = heads.get(session) {
            return Ok(sender.clone());
        }
        let head = self.last_seq(session)?;
        let (sender, heads_rx) = watch::channel(head);
        heads.insert(session.to_owned(), sender.clone());
        // Under the lock, so `watch_every` sees each watch exactly once: in its snapshot or
        // here. A new session's first watch is made when its writer starts, before its first
        // event.
        let _ = self.watches_opened.send(HeadWatch {
            session: session.to_owned(),
            head,
            heads: heads_rx,
        });
        Ok(sender)
    }

    /// Every session's head watch that exists now, and a receiver of each one made later
    /// (a new session's, or a deleted and recreated one's): together they name each session
    /// once.
    pub fn watch_every(&self) -> (Vec<HeadWatch>, broadcast::Receiver<HeadWatch>) {
        let heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        let now = heads
            .iter()
            .map(|(session, sender)| HeadWatch {
                session: session.clone(),
                head: *sender.borrow(),
                heads: sender.subscribe(),
            })
            .collect();
        (now, self.watches_opened.subscribe())
    }

    /// Wakes up when the session's log grows; the value is the newest durable seq.
    pub fn subscribe(&self, session: &str) -> Result<watch::Receiver<u64>> {
        Ok(self.head_sender(session)?.subscribe())
    }

    /// Tells readers that events up to `head` are durable.
    pub fn publish_head(&self, session: &str, head: u64) {
        if let Ok(sender) = self.head_sender(session) {
            sender.send_if_modified(|h| {
                let grew = head > *h;
                if grew {
                    *h = head;
                }
                grew
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log() -> (Arc<EventLog>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        (EventLog::open(&db).unwrap(), dir)
    }

    fn event(kind: &'static str, key: Option<&str>) -> NewEvent {
        NewEvent {
            kind,
            occurred_at: 7,
            data: json!({"n": key}),
            idempotency_key: key.map(str::to_owned),
        }
    }

    fn seqs(page: &Page) -> Vec<u64> {
        page.events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn records_round_trip() {
        let e = StoredEvent {
            seq: 3,
            kind: "message.received".into(),
            appended_at: 99,
            envelope: b"{\"a\":1}".to_vec(),
            idempotency_key: Some("chat/sender/id".into()),
        };
        assert_eq!(StoredEvent::decode(3, &e.encode()), Some(e.clone()));
        let plain = StoredEvent {
            idempotency_key: None,
            ..e
        };
        assert_eq!(StoredEvent::decode(3, &plain.encode()), Some(plain));
        assert_eq!(StoredEvent::decode(3, b"short"), None);
    }

    #[test]
    fn appends_number_without_gaps_and_skip_known_keys() {
        let (log, _dir) = log();
        assert_eq!(log.last_seq("a").unwrap(), 0);
        let first = log
            .append(
                "a",
                1,
                &[
                    event("message.received", Some("k1")),
                    event("session.status", None),
                ],
            )
            .unwrap();
        assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        // A redelivery of k1 beside a new k2 (and k2 twice in one batch) adds only k2.
        let second = log
            .append(
                "a",
                3,
                &[
                    event("message.received", Some("k1")),
                    event("message.received", Some("k2")),
                    event("message.received", Some("k2")),
                ],
            )
            .unwrap();
        assert_eq!(second.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
        assert_eq!(log.last_seq("a").unwrap(), 3);
        assert_eq!(log.last_seq("ab").unwrap(), 0);
        let envelope: Value = serde_json::from_slice(&second[0].envelope).unwrap();
        assert_eq!(envelope["seq"], 3);
        assert_eq!(envelope["type"], "message.received");
        assert_eq!(envelope["session"], "a");
        assert_eq!(envelope["occurred_at"], 7);
        assert!(envelope["id"].as_str().unwrap().starts_with("evt_"));
    }

    #[test]
    fn reads_page_filter_and_report_expiry() {
        let (log, _dir) = log();
        let batch: Vec<NewEvent> = (0..10)
            .map(|i| {
                event(
                    if i % 2 == 0 {
                        "message.received"
                    } else {
                        "group.updated"
                    },
                    None,
                )
            })
            .collect();
        log.append("s", 1, &batch).unwrap();
        let page = log.read("s", 0, 3, None, 1000).unwrap().unwrap();
        assert_eq!(seqs(&page), vec![1, 2, 3]);
        let page = log.read("s", 3, 100, None, 1000).unwrap().unwrap();
        assert_eq!(seqs(&page), (4..=10).collect::<Vec<_>>());
        let only = vec!["group.updated".to_owned()];
        let page = log.read("s", 0, 2, Some(&only), 1000).unwrap().unwrap();
        assert_eq!(seqs(&page), vec![2, 4]);
        assert_eq!(page.scanned_to, 4);
        assert!(!page.cut_short);
        let page = log.read("s", 10, 5, None, 1000).unwrap().unwrap();
        assert!(page.events.is_empty());
        assert_eq!(page.scanned_to, 10);
        // A scan that stops at its bound says so, and how far it looked.
        let none = vec!["session.status".to_owned()];
        let page = log.read("s", 2, 5, Some(&none), 3).unwrap().unwrap();
        assert!(page.events.is_empty() && page.cut_short);
        assert_eq!(page.scanned_to, 5);
        let page = log.read("s", 7, 5, Some(&none), 3).unwrap().unwrap();
        assert!(
            page.events.is_empty() && !page.cut_short,
            "the log ends there"
        );
        assert_eq!(page.scanned_to, 10);

        // Everything appended "now" is dropped by a cutoff in the future.
        assert_eq!(log.expire("s", crate::unix_now() + 10).unwrap(), 10);
        assert_eq!(log.floor("s").unwrap(), 10);
        assert_eq!(log.last_seq("s").unwrap(), 10, "seq never restarts");
        assert_eq!(
            log.read("s", 3, 5, None, 1000).unwrap(),
            Err(Expired { oldest: 11 })
        );
        assert!(log.read("s", 10, 5, None, 1000).unwrap().is_ok());
        // Dropped idempotency keys go too; new appends continue after the floor.
        let next = log.append("s", 11, &[event("message.received", Some("k"))]);
        assert_eq!(next.unwrap()[0].seq, 11);
    }

    #[test]
    fn a_message_is_found_by_its_id_in_its_chat_or_under_another_name_of_it() {
        let (log, _dir) = log();
        let message = |chat: &str, sender: &str, id: &str| NewEvent {
            kind: "message.received",
            occurred_at: 1,
            data: serde_json::json!({"chat": chat, "sender": sender, "message_id": id}),
            idempotency_key: Some(crate::event_data::message_key(chat, sender, id)),
        };
        log.append(
            "s",
            1,
            &[
                message("1@s.whatsapp.net", "1@s.whatsapp.net", "A1"),
                message("2@lid", "2@lid", "B1"),
                message("1@s.whatsapp.net", "1@s.whatsapp.net", "XA1"),
            ],
        )
        .unwrap();
        let seq = |found: Option<StoredEvent>| found.map(|e| e.seq);
        assert_eq!(
            seq(log.find_message("s", "1@s.whatsapp.net", "A1").unwrap()),
            Some(1)
        );
        assert_eq!(
            seq(log.find_message("s", "1@s.whatsapp.net", "XA1").unwrap()),
            Some(3)
        );
        // The chat named by phone number while the log has it by LID.
        assert_eq!(
            seq(log.find_message("s", "2@s.whatsapp.net", "B1").unwrap()),
            Some(2)
        );
        assert_eq!(
            log.find_message("s", "1@s.whatsapp.net", "1").unwrap(),
            None
        );
        assert_eq!(
            log.find_message("t", "1@s.whatsapp.net", "A1").unwrap(),
            None
        );
    }

    #[test]
    fn keys_lost_in_a_crash_are_restored_from_the_records() {
        let (log, _dir) = log();
        log.append("s", 1, &[event("message.received", Some("k"))])
            .unwrap();
        // As if a crash hit between the event and its key.
        log.events.remove(idempotency_entry("s", "k")).unwrap();
        assert_eq!(log.restore_keys("s", 100).unwrap(), 1);
        assert!(
            log.append("s", 2, &[event("message.received", Some("k"))])
                .unwrap()
                .is_empty(),
            "the redelivery is recognised again"
        );
        assert_eq!(log.restore_keys("s", 100).unwrap(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_writers_and_flushes_at_once_never_stall() {
        let (log, _dir) = log();
        let mut tasks = Vec::new();
        for s in 0..8 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let session = format!("s{s}");
                for i in 0..100u64 {
                    let key = format!("k{i}");
                    log.append(&session, i + 1, &[event("message.received", Some(&key))])
                        .unwrap();
                    log.flush().await.unwrap();
                    log.expire(&session, 0).unwrap();
                }
            }));
        }
        let all = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            for t in tasks {
                t.await.unwrap();
            }
        })
        .await;
        assert!(all.is_ok(), "appends and flushes stalled");
        assert_eq!(log.last_seq("s7").unwrap(), 100);
    }

    #[test]
    fn pending_counts_skip_what_retention_dropped_and_filter_by_type() {
        let (log, _dir) = log();
        log.append(
            "s",
            1,
            &[
                event("session.status", None),
                event("message.received", Some("a")),
                event("session.status", None),
            ],
        )
        .unwrap();
        log.publish_head("s", 3);
        let appended = log.read("s", 0, 10, None, 10).unwrap().unwrap().events[1].appended_at;
        assert_eq!(
            log.count_after("s", 1, None, 10).unwrap(),
            (2, Some(appended))
        );
        assert_eq!(log.count_after("s", 3, None, 10).unwrap(), (0, None));
        let received = ["message.received".to_owned()];
        assert_eq!(
            log.count_after("s", 0, Some(&received), 10).unwrap(),
            (1, Some(appended))
        );
        // Retention drops all three; two more come after.
        assert_eq!(log.expire("s", crate::unix_now() + 1).unwrap(), 3);
        log.append(
            "s",
            4,
            &[event("session.status", None), event("session.status", None)],
        )
        .unwrap();
        log.publish_head("s", 5);
        let (count, oldest) = log.count_after("s", 0, None, 10).unwrap();
        assert_eq!(count, 2);
        assert!(oldest.is_some());
        assert_eq!(log.count_after("s", 4, None, 10).unwrap().0, 1);
        assert_eq!(
            log.count_after("s", 0, Some(&received), 10).unwrap(),
            (0, None)
        );
    }

    #[test]
    fn expiry_keeps_recent_events() {
        let (log, _dir) = log();
        log.append("s", 1, &[event("message.received", Some("k"))])
            .unwrap();
        assert_eq!(log.expire("s", 1).unwrap(), 0);
        assert_eq!(log.floor("s").unwrap(), 0);
        // Still deduplicated.
        assert!(
            log.append("s", 2, &[event("message.received", Some("k"))])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn reads_stop_at_the_published_head() {
        let (log, _dir) = log();
        log.append("s", 1, &[event("session.status", None)])
            .unwrap();
        // The first reader finds what was on disk at start: durable.
        assert_eq!(
            seqs(&log.read("s", 0, 10, None, 10).unwrap().unwrap()),
            vec![1]
        );
        log.append(
            "s",
            2,
            &[event("session.status", None), event("session.status", None)],
        )
        .unwrap();
        let page = log.read("s", 0, 10, None, 10).unwrap().unwrap();
        assert_eq!(seqs(&page), vec![1], "2 and 3 wait for their flush");
        assert_eq!(page.scanned_to, 1);
        assert!(
            log.read("s", 1, 10, None, 10)
                .unwrap()
                .unwrap()
                .events
                .is_empty()
        );
        log.publish_head("s", 3);
        assert_eq!(
            seqs(&log.read("s", 1, 10, None, 10).unwrap().unwrap()),
            vec![2, 3]
        );
    }

    #[tokio::test]
    async fn every_head_watch_is_seen_once_in_the_snapshot_or_as_opened() {
        let (log, _dir) = log();
        log.append("old", 1, &[event("session.status", None)])
            .unwrap();
        log.publish_head("old", 1);
        let (now, mut opened) = log.watch_every();
        let named: Vec<(String, u64)> = now.iter().map(|w| (w.session.clone(), w.head)).collect();
        assert_eq!(named, vec![("old".to_owned(), 1)]);
        assert!(opened.try_recv().is_err(), "nothing new yet");

        // A new session's writer makes its watch before its first event.
        log.publish_head("new", 0);
        let new = opened.try_recv().expect("the new session's watch");
        assert_eq!((new.session.as_str(), new.head), ("new", 0));
        let mut heads = new.heads;
        log.publish_head("new", 1);
        heads.changed().await.unwrap();
        assert_eq!(*heads.borrow(), 1);
        // Known watches are not announced again.
        log.publish_head("old", 2);
        assert!(opened.try_recv().is_err());
        // A deleted and recreated session is a new one.
        log.delete_session("new").unwrap();
        log.publish_head("new", 0);
        let again = opened.try_recv().expect("the recreated session's watch");
        assert_eq!((again.session.as_str(), again.head), ("new", 0));
    }

    #[tokio::test]
    async fn heads_wake_subscribers_and_deletes_forget() {
        let (log, _dir) = log();
        log.append("s", 1, &[event("session.status", None)])
            .unwrap();
        let mut rx = log.subscribe("s").unwrap();
        assert_eq!(*rx.borrow(), 1);
        log.publish_head("s", 2);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 2);
        log.delete_session("s").unwrap();
        assert_eq!(log.last_seq("s").unwrap(), 0);
        assert!(
            log.read("s", 0, 10, None, 10)
                .unwrap()
                .unwrap()
                .events
                .is_empty()
        );
    }
}
