//! Webhooks as stored in sled: the registrations (`webhooks` tree, by id) and each
//! (webhook, session) delivery cursor (`webhook_cursors`, keys `webhook/session`), so a restart
//! resumes where delivery stopped.

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A webhook registration. `secrets` holds the current secret first, then any previous one
/// still signing until its `until` (Unix seconds).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookRecord {
    pub id: String,
    pub url: String,
    /// `["*"]` or event types.
    pub events: Vec<String>,
    /// `["*"]` or session ids.
    pub sessions: Vec<String>,
    pub secrets: Vec<SigningSecret>,
    pub created_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SigningSecret {
    pub secret: String,
    pub until: Option<u64>,
}

impl WebhookRecord {
    pub fn wants_session(&self, session: &str) -> bool {
        self.sessions.iter().any(|s| s == "*" || s == session)
    }

    /// The event types to deliver; `None` for all.
    pub fn type_filter(&self) -> Option<Vec<String>> {
        (!self.events.iter().any(|e| e == "*")).then(|| self.events.clone())
    }

    /// The secrets that sign now.
    pub fn signing_secrets(&self, now: u64) -> Vec<&str> {
        self.secrets
            .iter()
            .filter(|s| s.until.is_none_or(|until| until > now))
            .map(|s| s.secret.as_str())
            .collect()
    }
}

#[derive(Clone)]
pub struct WebhookStore {
    db: sled::Db,
    hooks: sled::Tree,
    cursors: sled::Tree,
    /// Per (webhook, session), keyed as the cursors: how many events retention dropped before
    /// they were delivered.
    expired: sled::Tree,
}

fn cursor_key(webhook: &str, session: &str) -> Vec<u8> {
    format!("{webhook}/{session}").into_bytes()
}

/// The number `tree` holds for (webhook, session), stored big-endian.
fn stored_u64(tree: &sled::Tree, webhook: &str, session: &str) -> Result<Option<u64>> {
    Ok(tree
        .get(cursor_key(webhook, session))?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes))
}

impl WebhookStore {
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(Self {
            hooks: db.open_tree("webhooks")?,
            cursors: db.open_tree("webhook_cursors")?,
            expired: db.open_tree("webhook_expired")?,
            db: db.clone(),
        })
    }

    pub fn all(&self) -> Result<Vec<WebhookRecord>> {
        let mut out = Vec::new();
        for item in self.hooks.iter() {
            let (key, value) = item?;
            match serde_json::from_slice(&value) {
                Ok(record) => out.push(record),
                Err(e) => tracing::error!(
                    webhook = %String::from_utf8_lossy(&key),
                    error = %e,
                    "skipping an unreadable webhook"
                ),
            }
        }
        Ok(out)
    }

    /// Stores a registration; durable on return.
    pub async fn put(&self, record: &WebhookRecord) -> Result<()> {
        self.hooks
            .insert(record.id.as_bytes(), serde_json::to_vec(record)?)?;
        crate::store::flush_db(&self.db).await?;
        Ok(())
    }

    /// Forgets a registration and its cursors; durable on return.
    pub async fn remove(&self, id: &str) -> Result<bool> {
        let existed = self.hooks.remove(id.as_bytes())?.is_some();
        // Key by key: sled 0.34's batches take a global lock that can deadlock against
        // concurrent flushes.
        for tree in [&self.cursors, &self.expired] {
            for key in tree.scan_prefix(format!("{id}/")).keys() {
                tree.remove(key?)?;
            }
        }
        crate::store::flush_db(&self.db).await?;
        Ok(existed)
    }

    /// Forgets every cursor (and expired count) of the sessions `gone` names, returning how
    /// many entries went; durable on return. A session created
    /// later under a deleted one's id then starts from its own first event, as a new one does.
    pub async fn forget_sessions(&self, gone: impl Fn(&str) -> bool) -> Result<usize> {
        let mut forgotten = 0;
        for tree in [&self.cursors, &self.expired] {
            for key in tree.iter().keys() {
                let key = key?;
                let session = key
                    .iter()
                    .position(|b| *b == b'/')
                    .and_then(|slash| std::str::from_utf8(&key[slash + 1..]).ok());
                if session.is_some_and(&gone) {
                    tree.remove(&key)?;
                    forgotten += 1;
                }
            }
        }
        if forgotten > 0 {
            crate::store::flush_db(&self.db).await?;
        }
        Ok(forgotten)
    }

    /// How many events retention dropped before this (webhook, session) delivered them.
    pub fn expired(&self, webhook: &str, session: &str) -> Result<u64> {
        Ok(stored_u64(&self.expired, webhook, session)?.unwrap_or(0))
    }

    /// Counts `more` expired events; made durable with the cursor that skips them. Returns
    /// the new count.
    pub fn add_expired(&self, webhook: &str, session: &str, more: u64) -> Result<u64> {
        let total = self.expired(webhook, session)?.saturating_add(more);
        self.expired
            .insert(cursor_key(webhook, session), &total.to_be_bytes())?;
        Ok(total)
    }

    pub fn cursor(&self, webhook: &str, session: &str) -> Result<Option<u64>> {
        stored_u64(&self.cursors, webhook, session)
    }

    /// Records delivery up to `seq`. Not flushed here: sled's background flush makes it
    /// durable shortly, and a cursor lost in a crash only means a redelivery with the same id.
    pub fn set_cursor(&self, webhook: &str, session: &str, seq: u64) -> Result<()> {
        self.cursors
            .insert(cursor_key(webhook, session), &seq.to_be_bytes())?;
        Ok(())
    }

    /// Sets a cursor durably (replay, new registrations).
    pub async fn set_cursor_durably(&self, webhook: &str, session: &str, seq: u64) -> Result<()> {
        self.set_cursor(webhook, session, seq)?;
        crate::store::flush_db(&self.db).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> WebhookRecord {
        WebhookRecord {
            id: id.into(),
            url: "http://127.0.0.1:1/h".into(),
            events: vec!["*".into()],
            sessions: vec!["a".into()],
            secrets: vec![
                SigningSecret {
                    secret: "new".into(),
                    until: None,
                },
                SigningSecret {
                    secret: "old".into(),
                    until: Some(100),
                },
            ],
            created_at: 1,
        }
    }

    #[test]
    fn filters_and_rotation() {
        let r = record("w");
        assert!(r.wants_session("a"));
        assert!(!r.wants_session("b"));
        assert_eq!(r.type_filter(), None);
        assert_eq!(r.signing_secrets(50), vec!["new", "old"]);
        assert_eq!(r.signing_secrets(100), vec!["new"]);
        let typed = WebhookRecord {
            events: vec!["message.received".into()],
            ..r
        };
        assert_eq!(typed.type_filter(), Some(vec!["message.received".into()]));
    }

    #[tokio::test]
    async fn records_and_cursors_persist_and_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = WebhookStore::open(&db).unwrap();
        store.put(&record("w1")).await.unwrap();
        store.put(&record("w2")).await.unwrap();
        store.set_cursor("w1", "a", 5).unwrap();
        store.set_cursor("w2", "a", 7).unwrap();
        assert_eq!(store.all().unwrap().len(), 2);
        assert_eq!(store.cursor("w1", "a").unwrap(), Some(5));
        assert!(store.remove("w1").await.unwrap());
        assert!(!store.remove("w1").await.unwrap());
        assert_eq!(store.cursor("w1", "a").unwrap(), None);
        assert_eq!(store.cursor("w2", "a").unwrap(), Some(7));
    }

    #[tokio::test]
    async fn a_deleted_sessions_cursors_go_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = WebhookStore::open(&db).unwrap();
        store.set_cursor("w1", "a", 5).unwrap();
        store.set_cursor("w1", "ab", 6).unwrap();
        store.set_cursor("w2", "a", 7).unwrap();
        store.set_cursor("w2", "b", 8).unwrap();
        assert_eq!(store.forget_sessions(|s| s == "a").await.unwrap(), 2);
        assert_eq!(store.cursor("w1", "a").unwrap(), None);
        assert_eq!(store.cursor("w2", "a").unwrap(), None);
        assert_eq!(store.cursor("w1", "ab").unwrap(), Some(6));
        assert_eq!(store.cursor("w2", "b").unwrap(), Some(8));
        assert_eq!(store.forget_sessions(|s| s == "a").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn expired_counts_add_up_and_go_with_their_webhook_or_session() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = WebhookStore::open(&db).unwrap();
        assert_eq!(store.expired("w1", "a").unwrap(), 0);
        assert_eq!(store.add_expired("w1", "a", 3).unwrap(), 3);
        assert_eq!(store.add_expired("w1", "a", 2).unwrap(), 5);
        store.add_expired("w1", "b", 1).unwrap();
        store.add_expired("w2", "a", 7).unwrap();
        assert_eq!(store.expired("w1", "a").unwrap(), 5);
        store.forget_sessions(|s| s == "b").await.unwrap();
        assert_eq!(store.expired("w1", "b").unwrap(), 0);
        store.remove("w1").await.unwrap();
        assert_eq!(store.expired("w1", "a").unwrap(), 0);
        assert_eq!(store.expired("w2", "a").unwrap(), 7);
    }
}
