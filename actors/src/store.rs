//! The sled snapshots: one tree per concern, keys prefixed by session id, every value wrapped
//! in a versioned envelope. Writes that acknowledge a client request are followed by
//! `flush_async` before the acknowledgement.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::path::Path;

use crate::error::{GatewayError, Result};
use crate::model::{SessionId, SessionRecord};
use crate::settings::Settings;

/// Format version of every stored value; bump and migrate on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub v: u32,
    pub saved_at: u64,
    pub data: T,
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    sessions: sled::Tree,
    groups: sled::Tree,
    invites: sled::Tree,
    /// Group writes sent to WhatsApp whose outcome is not in the cache yet.
    intents: sled::Tree,
}

impl Store {
    pub fn open(settings: &Settings) -> Result<Self> {
        let flush_ms = settings
            .snapshot_interval
            .as_millis()
            .clamp(1, u64::MAX as u128) as u64;
        let db = sled::Config::new()
            .path(settings.sled_dir())
            .cache_capacity(settings.cache_capacity_bytes)
            .mode(sled::Mode::LowSpace)
            .flush_every_ms(Some(flush_ms))
            .open()?;
        Self::from_db(db)
    }

    pub fn open_path(path: &Path) -> Result<Self> {
        Self::from_db(sled::open(path)?)
    }

    fn from_db(db: sled::Db) -> Result<Self> {
        Ok(Self {
            sessions: db.open_tree("sessions")?,
            groups: db.open_tree("groups")?,
            invites: db.open_tree("invites")?,
            intents: db.open_tree("intents")?,
            db,
        })
    }

    /// Makes every write so far durable.
    pub async fn flush(&self) -> Result<()> {
        flush_db(&self.db).await
    }

    fn encode<T: Serialize>(data: &T) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec(&Envelope {
            v: FORMAT_VERSION,
            saved_at: crate::unix_now(),
            data,
        })?)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<Envelope<T>> {
        let env: Envelope<T> = serde_json::from_slice(bytes)?;
        if env.v != FORMAT_VERSION {
            return Err(GatewayError::Storage(format!(
                "snapshot format {} is not supported (expected {FORMAT_VERSION})",
                env.v
            )));
        }
        Ok(env)
    }

    /// Stores a new session record only if the id is free; durable on return.
    pub async fn create_session(&self, record: &SessionRecord) -> Result<bool> {
        let swapped = self.sessions.compare_and_swap(
            record.id.as_str(),
            None::<&[u8]>,
            Some(Self::encode(record)?),
        )?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.flush().await?;
        Ok(true)
    }

    /// Write-through snapshot of a session record; durable on return.
    pub async fn put_session(&self, record: &SessionRecord) -> Result<()> {
        self.sessions
            .insert(record.id.as_str(), Self::encode(record)?)?;
        self.flush().await
    }

    pub fn session(&self, id: &SessionId) -> Result<Option<Envelope<SessionRecord>>> {
        self.sessions
            .get(id.as_str())?
            .map(|bytes| Self::decode(&bytes))
            .transpose()
    }

    /// Every stored session record, in id order; unreadable entries are reported and skipped.
    pub fn sessions(&self) -> Result<Vec<SessionRecord>> {
        let mut out = Vec::new();
        for item in self.sessions.iter() {
            let (key, value) = item?;
            match Self::decode::<SessionRecord>(&value) {
                Ok(env) => out.push(env.data),
                Err(e) => tracing::error!(
                    key = %String::from_utf8_lossy(&key),
                    error = %e,
                    "skipping unreadable session snapshot"
                ),
            }
        }
        Ok(out)
    }

    /// The ids of every stored session, in order.
    pub fn session_ids(&self) -> Result<Vec<String>> {
        self.sessions
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect()
    }

    /// Erases everything sled holds for a session; durable on return.
    pub async fn delete_session(&self, id: &SessionId) -> Result<()> {
        self.sessions.remove(id.as_str())?;
        for tree in [&self.groups, &self.invites, &self.intents] {
            let keys: Vec<_> = tree
                .scan_prefix(Self::prefix(id))
                .keys()
                .collect::<std::result::Result<_, _>>()?;
            // Key by key: sled 0.34's batches take a global lock that can deadlock against
            // concurrent flushes.
            for key in keys {
                tree.remove(key)?;
            }
        }
        self.flush().await
    }

    fn prefix(id: &SessionId) -> Vec<u8> {
        let mut p = id.as_str().as_bytes().to_vec();
        p.push(0);
        p
    }

    fn child_key(id: &SessionId, item: &str) -> Vec<u8> {
        let mut k = Self::prefix(id);
        k.extend_from_slice(item.as_bytes());
        k
    }

    fn tree(&self, kind: CacheKind) -> &sled::Tree {
        match kind {
            CacheKind::Groups => &self.groups,
            CacheKind::Invites => &self.invites,
        }
    }

    /// Write-through snapshot of one cached item (a group, an invite link); durable on return.
    pub async fn put_cached<T: Serialize>(
        &self,
        kind: CacheKind,
        id: &SessionId,
        item: &str,
        value: &T,
    ) -> Result<()> {
        self.tree(kind)
            .insert(Self::child_key(id, item), Self::encode(value)?)?;
        self.flush().await
    }

    /// Like [`Store::put_cached`] without the flush, for batches followed by one flush.
    pub fn put_cached_unflushed<T: Serialize>(
        &self,
        kind: CacheKind,
        id: &SessionId,
        item: &str,
        value: &T,
    ) -> Result<()> {
        self.tree(kind)
            .insert(Self::child_key(id, item), Self::encode(value)?)?;
        Ok(())
    }

    pub fn remove_cached_unflushed(
        &self,
        kind: CacheKind,
        id: &SessionId,
        item: &str,
    ) -> Result<()> {
        self.tree(kind).remove(Self::child_key(id, item))?;
        Ok(())
    }

    pub async fn remove_cached(&self, kind: CacheKind, id: &SessionId, item: &str) -> Result<()> {
        self.tree(kind).remove(Self::child_key(id, item))?;
        self.flush().await
    }

    /// Every cached item of a session, keyed by item name.
    pub fn cached<T: DeserializeOwned>(
        &self,
        kind: CacheKind,
        id: &SessionId,
    ) -> Result<Vec<(String, Envelope<T>)>> {
        let prefix = Self::prefix(id);
        let mut out = Vec::new();
        for item in self.tree(kind).scan_prefix(&prefix) {
            let (key, value) = item?;
            let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            match Self::decode::<T>(&value) {
                Ok(env) => out.push((name, env)),
                Err(e) => {
                    tracing::error!(session = %id, item = %name, error = %e, "skipping unreadable cache entry")
                }
            }
        }
        Ok(out)
    }

    fn intent_key(id: &SessionId, group: &str, intent: u64) -> Vec<u8> {
        let mut k = Self::child_key(id, group);
        k.push(0);
        k.extend_from_slice(&intent.to_be_bytes());
        k
    }

    /// Records, durably, that a write to `group` is about to be sent to WhatsApp; returns the
    /// intent's id. Whatever happens to the answer, the group is read again while it is open.
    pub async fn begin_intent(&self, id: &SessionId, group: &str) -> Result<u64> {
        let intent = self.db.generate_id()?;
        self.intents.insert(
            Self::intent_key(id, group, intent),
            Self::encode(&crate::unix_now())?,
        )?;
        self.flush().await?;
        Ok(intent)
    }

    /// The write's outcome is in the cache (or known not to have happened). Not flushed: an
    /// intent that survives a crash only costs one more query.
    pub fn end_intent(&self, id: &SessionId, group: &str, intent: u64) -> Result<()> {
        self.intents.remove(Self::intent_key(id, group, intent))?;
        Ok(())
    }

    /// The session's open intents: (group, intent id).
    pub fn intents(&self, id: &SessionId) -> Result<Vec<(String, u64)>> {
        let prefix = Self::prefix(id);
        let mut out = Vec::new();
        for key in self.intents.scan_prefix(&prefix).keys() {
            let key = key?;
            let rest = &key[prefix.len()..];
            if rest.len() < 9 {
                continue;
            }
            let (group, tail) = rest.split_at(rest.len() - 9);
            let mut id_bytes = [0u8; 8];
            id_bytes.copy_from_slice(&tail[1..]);
            out.push((
                String::from_utf8_lossy(group).into_owned(),
                u64::from_be_bytes(id_bytes),
            ));
        }
        Ok(out)
    }

    /// The raw snapshot of a session as stored, for the admin API.
    pub fn raw_snapshot(&self, id: &SessionId) -> Result<Option<serde_json::Value>> {
        let Some(bytes) = self.sessions.get(id.as_str())? else {
            return Ok(None);
        };
        let session: serde_json::Value = serde_json::from_slice(&bytes)?;
        let collect = |kind: CacheKind| -> Result<serde_json::Map<String, serde_json::Value>> {
            let mut map = serde_json::Map::new();
            for (name, env) in self.cached::<serde_json::Value>(kind, id)? {
                map.insert(name, serde_json::to_value(env)?);
            }
            Ok(map)
        };
        Ok(Some(serde_json::json!({
            "id": id.as_str(),
            "format_version": session.get("v").cloned().unwrap_or(serde_json::Value::Null),
            "saved_at": session.get("saved_at").cloned().unwrap_or(serde_json::Value::Null),
            "session": session.get("data").cloned().unwrap_or(serde_json::Value::Null),
            "groups": collect(CacheKind::Groups)?,
            "invites": redact_links(collect(CacheKind::Invites)?),
        })))
    }

    /// The database, for the other logs kept in it (events, webhooks).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn is_open(&self) -> bool {
        self.db.get(b"__probe").is_ok()
    }
}

/// An invite link lets whoever holds it join the group: the snapshot shows that one is cached,
/// not its code.
fn redact_links(
    mut invites: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    for envelope in invites.values_mut() {
        if let Some(link) = envelope.pointer_mut("/data/link") {
            *link = serde_json::Value::from("https://chat.whatsapp.com/[redacted]");
        }
    }
    invites
}

/// One `flush_async` at a time. sled 0.34 runs each flush on its own small I/O thread pool;
/// enough concurrent flushes occupy every thread waiting for a write that then has no thread
/// to run on, and everything stalls. One flush covers every write made before it, so waiting
/// for the previous one costs nothing in durability.
static FLUSH: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Makes every write to `db` so far durable.
pub async fn flush_db(db: &sled::Db) -> Result<()> {
    let _one_at_a_time = FLUSH.lock().await;
    db.flush_async().await?;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub enum CacheKind {
    Groups,
    Invites,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SessionStatus;

    fn record(id: &str) -> SessionRecord {
        SessionRecord {
            id: SessionId::parse(id).unwrap(),
            name: id.into(),
            wanted_online: true,
            status: SessionStatus::Connecting,
            phone_number: None,
            push_name: None,
            lid: None,
            device_id: None,
            created_at: 1,
            updated_at: 1,
            last_connected_at: None,
        }
    }

    #[tokio::test]
    async fn create_is_create_only_and_delete_erases_caches() {
        let dir = std::env::temp_dir().join(format!("wagate-store-{}", SessionId::generate()));
        let store = Store::open_path(&dir).unwrap();
        let a = record("a");
        assert!(store.create_session(&a).await.unwrap());
        assert!(!store.create_session(&a).await.unwrap());
        store
            .put_cached(CacheKind::Groups, &a.id, "1@g.us", &"g")
            .await
            .unwrap();
        store
            .put_cached(CacheKind::Groups, &record("ab").id, "2@g.us", &"other")
            .await
            .unwrap();
        assert_eq!(
            store
                .cached::<String>(CacheKind::Groups, &a.id)
                .unwrap()
                .len(),
            1
        );
        store.delete_session(&a.id).await.unwrap();
        assert!(store.session(&a.id).unwrap().is_none());
        assert!(
            store
                .cached::<String>(CacheKind::Groups, &a.id)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .cached::<String>(CacheKind::Groups, &record("ab").id)
                .unwrap()
                .len(),
            1
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn intents_are_listed_until_ended_and_go_with_the_session() {
        let dir = std::env::temp_dir().join(format!("wagate-store-{}", SessionId::generate()));
        let store = Store::open_path(&dir).unwrap();
        let a = record("a");
        assert!(store.create_session(&a).await.unwrap());
        let first = store.begin_intent(&a.id, "1@g.us").await.unwrap();
        let second = store.begin_intent(&a.id, "1@g.us").await.unwrap();
        store.begin_intent(&record("b").id, "2@g.us").await.unwrap();
        assert_eq!(
            store.intents(&a.id).unwrap(),
            vec![("1@g.us".to_owned(), first), ("1@g.us".to_owned(), second)]
        );
        store.end_intent(&a.id, "1@g.us", first).unwrap();
        assert_eq!(
            store.intents(&a.id).unwrap(),
            vec![("1@g.us".to_owned(), second)]
        );
        store.delete_session(&a.id).await.unwrap();
        assert!(store.intents(&a.id).unwrap().is_empty());
        assert_eq!(store.intents(&record("b").id).unwrap().len(), 1);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
