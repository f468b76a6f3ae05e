//! A session's whatsapp-rust store: its SQLite credential store for everything but the copies
//! of sent messages that answer retry receipts. Those are written once per send, so they live
//! in the gateway's sled database, where a write is an in-memory insert made durable by the
//! next flush, instead of a SQLite transaction on the blocking pool.

use std::sync::Arc;

use bytes::Bytes;
use whatsapp_rust::async_trait;
use whatsapp_rust::store::SqliteStore;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::reporting_token::MESSAGE_SECRET_SIZE;
use whatsapp_rust::wacore::stats::StorageResourceReport;
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::error::{Result, StoreError};
use whatsapp_rust::wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, DeviceListRecord, DeviceStore, LidPnMappingEntry,
    MsgSecretEntry, MsgSecretStore, PendingInboundKey, PendingInboundRow, ProtocolStore,
    SignalStore, TcTokenEntry,
};

/// The copies of sent messages, of every session, in one sled tree. A key is
/// `session \0 chat \0 message id`; a value is the send's unix time (8 bytes, big-endian)
/// followed by the encoded message.
#[derive(Clone)]
pub struct SentMessages {
    tree: sled::Tree,
}

impl std::fmt::Debug for SentMessages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentMessages").finish_non_exhaustive()
    }
}

fn session_prefix(session: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(session.len() + 1);
    key.extend_from_slice(session.as_bytes());
    key.push(0);
    key
}

fn sent_key(session: &str, chat: &str, message_id: &str) -> Vec<u8> {
    let mut key = session_prefix(session);
    key.reserve(chat.len() + 1 + message_id.len());
    key.extend_from_slice(chat.as_bytes());
    key.push(0);
    key.extend_from_slice(message_id.as_bytes());
    key
}

fn sent_value(sent_at: i64, payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + payload.len());
    value.extend_from_slice(&sent_at.to_be_bytes());
    value.extend_from_slice(payload);
    value
}

/// The send time and message of a stored value; `None` for a value too short to be one.
fn read_sent_value(value: &[u8]) -> Option<(i64, &[u8])> {
    let (time, payload) = value.split_first_chunk::<8>()?;
    Some((i64::from_be_bytes(*time), payload))
}

fn database_error(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Database(Box::new(e))
}

impl SentMessages {
    pub fn open(db: &sled::Db) -> sled::Result<Self> {
        Ok(SentMessages {
            tree: db.open_tree("wa_sent_messages")?,
        })
    }

    fn store(&self, session: &str, chat: &str, message_id: &str, payload: &[u8]) -> Result<()> {
        self.tree
            .insert(
                sent_key(session, chat, message_id),
                sent_value(whatsapp_rust::wacore::time::now_secs(), payload),
            )
            .map_err(database_error)?;
        Ok(())
    }

    /// Removes and returns the message, so that one retry receipt is answered once.
    fn take(&self, session: &str, chat: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        let taken = self
            .tree
            .remove(sent_key(session, chat, message_id))
            .map_err(database_error)?;
        Ok(taken.and_then(|value| read_sent_value(&value).map(|(_, payload)| payload.to_vec())))
    }

    /// Removes the session's messages sent before `cutoff` (unix seconds); returns how many.
    fn delete_sent_before(&self, session: &str, cutoff: i64) -> Result<u32> {
        self.remove_where(session, |value| {
            read_sent_value(value).is_none_or(|(sent_at, _)| sent_at < cutoff)
        })
    }

    /// Removes every message of the session: its credentials are gone.
    pub fn forget_session(&self, session: &str) -> Result<u32> {
        self.remove_where(session, |_| true)
    }

    /// Removes the session's entries whose value `doomed` picks; returns how many.
    fn remove_where(&self, session: &str, doomed: impl Fn(&[u8]) -> bool) -> Result<u32> {
        let mut removed = 0u32;
        for entry in self.tree.scan_prefix(session_prefix(session)) {
            let (key, value) = entry.map_err(database_error)?;
            if doomed(&value) && self.tree.remove(&key).map_err(database_error)?.is_some() {
                removed = removed.saturating_add(1);
            }
        }
        Ok(removed)
    }
}

/// The store a session's client is built on.
pub struct SessionStore {
    sqlite: SqliteStore,
    sent: SentMessages,
    session: Arc<str>,
}

impl SessionStore {
    pub fn new(sqlite: SqliteStore, sent: SentMessages, session: &str) -> Self {
        SessionStore {
            sqlite,
            sent,
            session: session.into(),
        }
    }
}

#[async_trait]
impl SignalStore for SessionStore {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.sqlite.put_identity(address, key).await
    }
    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        self.sqlite.put_identities_batch(identities).await
    }
    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        self.sqlite.load_identity(address).await
    }
    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.sqlite.delete_identity(address).await
    }
    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        self.sqlite.get_session(address).await
    }
    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.sqlite.put_session(address, session).await
    }
    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.sqlite.put_sessions_batch(sessions).await
    }
    async fn delete_session(&self, address: &str) -> Result<()> {
        self.sqlite.delete_session(address).await
    }
    async fn has_session(&self, address: &str) -> Result<bool> {
        self.sqlite.has_session(address).await
    }
    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        self.sqlite.has_signal_state_for_user(user).await
    }
    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        self.sqlite.store_prekey(id, record, uploaded).await
    }
    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        self.sqlite.store_prekeys_batch(keys, uploaded).await
    }
    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        self.sqlite.load_prekey(id).await
    }
    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        self.sqlite.load_prekeys_batch(ids).await
    }
    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        self.sqlite.mark_prekeys_uploaded(ids).await
    }
    async fn remove_prekey(&self, id: u32) -> Result<()> {
        self.sqlite.remove_prekey(id).await
    }
    async fn get_max_prekey_id(&self) -> Result<u32> {
        self.sqlite.get_max_prekey_id().await
    }
    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        self.sqlite.store_signed_prekey(id, record).await
    }
    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        self.sqlite.load_signed_prekey(id).await
    }
    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        self.sqlite.load_all_signed_prekeys().await
    }
    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        self.sqlite.remove_signed_prekey(id).await
    }
    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.sqlite.put_sender_key(address, record).await
    }
    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.sqlite.put_sender_keys_batch(sender_keys).await
    }
    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.sqlite.get_sender_key(address).await
    }
    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.sqlite.delete_sender_key(address).await
    }
}
#[async_trait]
impl AppSyncStore for SessionStore {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        self.sqlite.get_sync_key(key_id).await
    }
    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        self.sqlite.set_sync_key(key_id, key).await
    }
    async fn get_version(&self, name: &str) -> Result<HashState> {
        self.sqlite.get_version(name).await
    }
    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        self.sqlite.set_version(name, state).await
    }
    async fn put_mutation_macs(
        &self,
        name: &str,
        version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        self.sqlite
            .put_mutation_macs(name, version, mutations)
            .await
    }
    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        self.sqlite.get_mutation_mac(name, index_mac).await
    }
    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> Result<std::collections::HashMap<[u8; 32], Vec<u8>>> {
        self.sqlite.get_mutation_macs(name, index_macs).await
    }
    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        self.sqlite.delete_mutation_macs(name, index_macs).await
    }
    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        self.sqlite.clear_mutation_macs(name).await
    }
    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        self.sqlite.get_latest_sync_key_id().await
    }
}
#[async_trait]
impl ProtocolStore for SessionStore {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        self.sqlite.get_sender_key_devices(group_jid).await
    }
    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        self.sqlite.set_sender_key_status(group_jid, entries).await
    }
    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        self.sqlite.clear_sender_key_devices(group_jid).await
    }
    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        self.sqlite.delete_sender_key_device_rows(device_jids).await
    }
    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        self.sqlite.clear_all_sender_key_devices().await
    }
    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        self.sqlite.get_lid_mapping(lid).await
    }
    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        self.sqlite.get_pn_mapping(phone).await
    }
    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.sqlite.put_lid_mapping(entry).await
    }
    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> Result<()> {
        self.sqlite.put_lid_mappings(entries).await
    }
    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        self.sqlite.get_all_lid_mappings().await
    }
    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.sqlite
            .save_base_key(address, message_id, base_key)
            .await
    }
    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        self.sqlite
            .has_same_base_key(address, message_id, current_base_key)
            .await
    }
    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        self.sqlite.delete_base_key(address, message_id).await
    }
    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.sqlite.update_device_list(record).await
    }
    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        self.sqlite.update_device_lists(records).await
    }
    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        self.sqlite.get_devices(user).await
    }
    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.sqlite.delete_devices(user).await
    }
    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        self.sqlite.get_group_metadata(group_jid).await
    }
    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.sqlite.put_group_metadata(group_jid, blob).await
    }
    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.sqlite.delete_group_metadata(group_jid).await
    }
    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        self.sqlite.get_tc_token(jid).await
    }
    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        self.sqlite.put_tc_token(jid, entry).await
    }
    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        self.sqlite.delete_tc_token(jid).await
    }
    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        self.sqlite.get_all_tc_token_jids().await
    }
    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        self.sqlite
            .delete_expired_tc_tokens(token_cutoff, sender_cutoff)
            .await
    }
    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        self.sqlite
            .touch_tc_token_sender_timestamp(jid, sender_timestamp)
            .await
    }
    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        self.sqlite
            .store_received_tc_token(jid, token, token_timestamp)
            .await
    }
    // The copies for retry receipts: sled, not SQLite (see the module's opening).
    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        self.sent
            .store(&self.session, chat_jid, message_id, payload)
    }
    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        match self.sent.take(&self.session, chat_jid, message_id)? {
            Some(payload) => Ok(Some(payload)),
            // A copy an earlier version of the gateway wrote to SQLite.
            None => self.sqlite.take_sent_message(chat_jid, message_id).await,
        }
    }
    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        let (sent, session) = (self.sent.clone(), self.session.clone());
        let here = tokio::task::spawn_blocking(move || {
            sent.delete_sent_before(&session, cutoff_timestamp)
        })
        .await
        .map_err(database_error)??;
        let older = self
            .sqlite
            .delete_expired_sent_messages(cutoff_timestamp)
            .await?;
        Ok(here.saturating_add(older))
    }
    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        self.sqlite
            .store_pending_inbound(chat, sender, id, message)
            .await
    }
    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.sqlite.get_pending_inbound(chat, sender, id).await
    }
    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        self.sqlite.delete_pending_inbound(chat, sender, id).await
    }
    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.sqlite
            .delete_expired_pending_inbound(cutoff_timestamp)
            .await
    }
    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> Result<()> {
        self.sqlite.store_pending_inbound_batch(rows).await
    }
    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> Result<()> {
        self.sqlite.delete_pending_inbound_batch(keys).await
    }
}
#[async_trait]
impl MsgSecretStore for SessionStore {
    async fn put_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
        secret: &[u8; MESSAGE_SECRET_SIZE],
    ) -> Result<()> {
        self.sqlite
            .put_msg_secret(chat, sender, msg_id, secret)
            .await
    }
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        self.sqlite.put_msg_secrets(entries).await
    }
    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.sqlite.get_msg_secret(chat, sender, msg_id).await
    }
    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        self.sqlite
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await
    }
    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.sqlite
            .delete_expired_msg_secrets(cutoff_timestamp)
            .await
    }
}
#[async_trait]
impl DeviceStore for SessionStore {
    async fn save(&self, device: &Device) -> Result<()> {
        self.sqlite.save(device).await
    }
    async fn load(&self) -> Result<Option<Device>> {
        self.sqlite.load().await
    }
    async fn exists(&self) -> Result<bool> {
        self.sqlite.exists().await
    }
    async fn create(&self) -> Result<i32> {
        self.sqlite.create().await
    }
    async fn snapshot_db(&self, name: &str, extra_content: Option<&[u8]>) -> Result<()> {
        self.sqlite.snapshot_db(name, extra_content).await
    }
    async fn resource_report(&self) -> StorageResourceReport {
        self.sqlite.resource_report().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent_messages() -> SentMessages {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("temporary sled");
        SentMessages::open(&db).expect("tree")
    }

    #[test]
    fn a_value_keeps_its_time_and_message_and_a_short_one_is_refused() {
        let value = sent_value(-5, b"message");
        assert_eq!(read_sent_value(&value), Some((-5, &b"message"[..])));
        assert_eq!(read_sent_value(&sent_value(7, b"")), Some((7, &b""[..])));
        assert_eq!(read_sent_value(b"short"), None);
    }

    #[test]
    fn a_sent_message_is_taken_once_by_its_session_chat_and_id() {
        let sent = sent_messages();
        sent.store("s1", "g@g.us", "ID1", b"one").expect("store");
        sent.store("s2", "g@g.us", "ID1", b"other session")
            .expect("store");
        assert_eq!(sent.take("s1", "g@g.us", "ID2").expect("take"), None);
        assert_eq!(sent.take("s1", "h@g.us", "ID1").expect("take"), None);
        assert_eq!(
            sent.take("s1", "g@g.us", "ID1").expect("take"),
            Some(b"one".to_vec())
        );
        assert_eq!(sent.take("s1", "g@g.us", "ID1").expect("take"), None);
        assert_eq!(
            sent.take("s2", "g@g.us", "ID1").expect("take"),
            Some(b"other session".to_vec())
        );
    }

    #[test]
    fn expiry_removes_only_the_sessions_older_messages() {
        let sent = sent_messages();
        let insert = |session: &str, id: &str, at: i64| {
            sent.tree
                .insert(
                    sent_key(session, "c@s.whatsapp.net", id),
                    sent_value(at, b"m"),
                )
                .expect("insert");
        };
        insert("s", "old", 100);
        insert("s", "new", 200);
        insert("s-2", "old", 100);
        // A session whose id extends another's is a different prefix.
        insert("s2", "old", 100);
        assert_eq!(sent.delete_sent_before("s", 200).expect("expire"), 1);
        assert!(
            sent.take("s", "c@s.whatsapp.net", "old")
                .expect("take")
                .is_none()
        );
        assert!(
            sent.take("s", "c@s.whatsapp.net", "new")
                .expect("take")
                .is_some()
        );
        assert!(
            sent.take("s-2", "c@s.whatsapp.net", "old")
                .expect("take")
                .is_some()
        );
        assert!(
            sent.take("s2", "c@s.whatsapp.net", "old")
                .expect("take")
                .is_some()
        );
    }

    /// Through the trait the client calls, on a real SQLite credential store: copies go to sled,
    /// and rows an earlier version wrote to SQLite are still taken and expired.
    #[tokio::test]
    async fn the_client_stores_copies_in_sled_and_still_finds_older_sqlite_rows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("whatsapp.db");
        let sqlite = SqliteStore::new(db.to_str().expect("UTF-8 path"))
            .await
            .expect("SQLite store");
        sqlite
            .store_sent_message("g@g.us", "BEFORE", b"older")
            .await
            .expect("SQLite row");
        let sent = sent_messages();
        let store = SessionStore::new(sqlite, sent.clone(), "s");
        store
            .store_sent_message("g@g.us", "NOW", b"newer")
            .await
            .expect("store");
        assert!(
            sent.tree
                .contains_key(sent_key("s", "g@g.us", "NOW"))
                .expect("read")
        );
        assert!(
            store
                .sqlite
                .take_sent_message("g@g.us", "NOW")
                .await
                .expect("take")
                .is_none(),
            "a copy costs no SQLite write"
        );
        assert_eq!(
            store
                .take_sent_message("g@g.us", "NOW")
                .await
                .expect("take"),
            Some(b"newer".to_vec())
        );
        assert_eq!(
            store
                .take_sent_message("g@g.us", "BEFORE")
                .await
                .expect("take"),
            Some(b"older".to_vec())
        );
        assert_eq!(
            store
                .take_sent_message("g@g.us", "BEFORE")
                .await
                .expect("take"),
            None
        );

        store
            .sqlite
            .store_sent_message("g@g.us", "OLD1", b"m")
            .await
            .expect("row");
        store
            .store_sent_message("g@g.us", "OLD2", b"m")
            .await
            .expect("store");
        let far_future = whatsapp_rust::wacore::time::now_secs() + 3600;
        assert_eq!(
            store
                .delete_expired_sent_messages(far_future)
                .await
                .expect("expire"),
            2
        );
        assert_eq!(
            store
                .take_sent_message("g@g.us", "OLD1")
                .await
                .expect("take"),
            None
        );
        assert_eq!(
            store
                .take_sent_message("g@g.us", "OLD2")
                .await
                .expect("take"),
            None
        );
    }

    #[test]
    fn forgetting_a_session_leaves_the_others() {
        let sent = sent_messages();
        sent.store("gone", "c", "1", b"m").expect("store");
        sent.store("gone", "d", "2", b"m").expect("store");
        sent.store("kept", "c", "1", b"m").expect("store");
        sent.forget_session("gone").expect("forget");
        assert!(sent.take("gone", "c", "1").expect("take").is_none());
        assert!(sent.take("gone", "d", "2").expect("take").is_none());
        assert!(sent.take("kept", "c", "1").expect("take").is_some());
    }
}
