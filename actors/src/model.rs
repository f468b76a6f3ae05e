//! Domain types shared by the actors and the edge: identifiers parsed once, statuses, and the
//! typed replies (views) that the edge serialises as the contract's JSON.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::GatewayError;

/// A session id: 1-64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    pub fn parse(raw: &str) -> Result<Self, GatewayError> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(GatewayError::validation(
                "id",
                "session ids are 1-64 characters of A-Z, a-z, 0-9, '_' and '-'",
            ))
        }
    }

    /// A fresh random id (16 lowercase hex digits).
    pub fn generate() -> Self {
        use rand::Rng;
        let n: u64 = rand::rng().random();
        Self(format!("{n:016x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Disconnected,
    Connecting,
    WaitingForQr,
    WaitingForPairCode,
    Connected,
    LoggedIn,
    LoggedOut,
    Failed,
}

impl SessionStatus {
    pub const ALL: [Self; 8] = [
        Self::Disconnected,
        Self::Connecting,
        Self::WaitingForQr,
        Self::WaitingForPairCode,
        Self::Connected,
        Self::LoggedIn,
        Self::LoggedOut,
        Self::Failed,
    ];

    /// A one-byte code, for publishing the status through an atomic.
    pub fn code(self) -> u8 {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0) as u8
    }

    pub fn from_code(code: u8) -> Self {
        Self::ALL
            .get(usize::from(code))
            .copied()
            .unwrap_or(Self::Disconnected)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::WaitingForQr => "waiting_for_qr",
            Self::WaitingForPairCode => "waiting_for_pair_code",
            Self::Connected => "connected",
            Self::LoggedIn => "logged_in",
            Self::LoggedOut => "logged_out",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What sled keeps for a session: enough to rebuild its actor after a restart or crash.
/// Credentials are not here; they live in the session's SQLite store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub name: String,
    /// Whether the operator wants this session online; survives restarts.
    pub wanted_online: bool,
    /// Last status observed, for sessions that are not running a client.
    pub status: SessionStatus,
    pub phone_number: Option<String>,
    pub push_name: Option<String>,
    pub lid: Option<String>,
    pub device_id: Option<u16>,
    pub created_at: u64,
    pub updated_at: u64,
    pub last_connected_at: Option<u64>,
}

/// The contract's session object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SessionView {
    pub id: String,
    pub name: String,
    pub status: SessionStatus,
    pub is_logged_in: bool,
    pub phone_number: Option<String>,
    pub push_name: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    pub last_connected_at: Option<u64>,
}

impl SessionView {
    pub fn from_record(record: &SessionRecord, status: SessionStatus) -> Self {
        Self {
            id: record.id.to_string(),
            name: record.name.clone(),
            status,
            is_logged_in: status == SessionStatus::LoggedIn,
            phone_number: record.phone_number.clone(),
            push_name: record.push_name.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            last_connected_at: record.last_connected_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct StatusView {
    pub status: SessionStatus,
    pub is_logged_in: bool,
    pub socket_alive: bool,
    pub phone_number: Option<String>,
    pub push_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct QrView {
    pub qr_codes: Vec<String>,
    pub timeout_seconds: u64,
    pub status: SessionStatus,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PairCodeView {
    pub code: String,
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DeviceView {
    pub device_id: Option<u16>,
    pub phone_number: Option<String>,
    pub lid: Option<String>,
    pub push_name: Option<String>,
}

/// A phone number as WhatsApp wants it: digits only, country code first, no leading zero.
pub fn normalize_phone(raw: &str) -> Result<String, GatewayError> {
    let trimmed = raw.trim();
    let allowed = trimmed
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'));
    let digits: String = trimmed.chars().filter(|c| c.is_ascii_digit()).collect();
    if !allowed || !(7..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err(GatewayError::validation(
            "phone_number",
            "expected an international phone number (7-15 digits, country code first, e.g. +628123456789)",
        ));
    }
    Ok(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_follow_the_contract() {
        assert!(SessionId::parse("my-session_1").is_ok());
        assert!(SessionId::parse(&"a".repeat(64)).is_ok());
        assert!(SessionId::parse(&"a".repeat(65)).is_err());
        assert!(SessionId::parse("").is_err());
        assert!(SessionId::parse("bad id!").is_err());
        assert!(SessionId::parse(SessionId::generate().as_str()).is_ok());
    }

    #[test]
    fn status_codes_round_trip() {
        for status in SessionStatus::ALL {
            assert_eq!(SessionStatus::from_code(status.code()), status);
        }
    }

    #[test]
    fn phone_numbers_are_normalised() {
        assert_eq!(normalize_phone("+62 812-3456-789").unwrap(), "628123456789");
        assert!(normalize_phone("0812345678").is_err());
        assert!(normalize_phone("12ab").is_err());
    }
}

/// A user JID: `<digits>@s.whatsapp.net` or `<digits>@lid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserJid(String);

/// A group JID: `<id>@g.us`, where the id is digits, or digits-dash-digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupJid(String);

/// A message recipient: a user or a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatJid {
    User(UserJid),
    Group(GroupJid),
}

/// A bare group id: `<creator>-<creation time>` (the time is 10 digits of Unix seconds, which
/// tells it from a phone number written with one hyphen), or a new-style id longer than any
/// phone number.
fn is_group_id(id: &str) -> bool {
    let mut parts = id.split('-');
    let first = parts.next().unwrap_or("");
    let second = parts.next();
    let digits = |s: &str| !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit());
    parts.next().is_none()
        && digits(first)
        && match second {
            Some(s) => digits(s) && s.len() == 10,
            None => first.len() > 15,
        }
}

impl UserJid {
    /// Accepts `628…@s.whatsapp.net`, `…@lid` or a bare phone number (`+62 812-3456-789`).
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        if let Some((user, server)) = raw.split_once('@') {
            let user = user.split(':').next().unwrap_or("");
            let valid = !user.is_empty()
                && user.len() <= 20
                && user.bytes().all(|b| b.is_ascii_digit())
                && matches!(server, "s.whatsapp.net" | "lid" | "c.us");
            let server = if server == "c.us" {
                "s.whatsapp.net"
            } else {
                server
            };
            return valid.then(|| Self(format!("{user}@{server}")));
        }
        normalize_phone(raw)
            .ok()
            .map(|digits| Self(format!("{digits}@s.whatsapp.net")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl GroupJid {
    /// Accepts `<id>@g.us` or a bare group id (`123456789-1234567890`, `120363…`).
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let id = match raw.split_once('@') {
            Some((id, "g.us")) => id,
            Some(_) => return None,
            None => raw,
        };
        let qualified = raw.contains('@');
        let valid = if qualified {
            let mut parts = id.split('-');
            let ok = |s: Option<&str>| {
                s.is_some_and(|s| {
                    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit())
                })
            };
            let first = parts.next();
            let second = parts.next();
            ok(first) && (second.is_none() || ok(second)) && parts.next().is_none()
        } else {
            is_group_id(id)
        };
        valid.then(|| Self(format!("{id}@g.us")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ChatJid {
    pub fn parse(raw: &str) -> Option<Self> {
        GroupJid::parse(raw)
            .map(Self::Group)
            .or_else(|| UserJid::parse(raw).map(Self::User))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::User(u) => u.as_str(),
            Self::Group(g) => g.as_str(),
        }
    }
}

impl fmt::Display for UserJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for GroupJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A change to one group, pushed by WhatsApp. Users are JIDs without device
/// (`628…@s.whatsapp.net`, or `…@lid` when WhatsApp gave no phone number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupNotification {
    pub group: String,
    /// The notification stanza's id and the action's place in it, when WhatsApp gave an id:
    /// the same action delivered again (its ack was lost) has the same source.
    pub source: Option<String>,
    /// The participant who made the change, when WhatsApp names one.
    pub author: Option<String>,
    /// Unix seconds.
    pub timestamp: u64,
    pub change: GroupChange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    Added(Vec<String>),
    Removed(Vec<String>),
    Promoted(Vec<String>),
    Demoted(Vec<String>),
    Subject(String),
    Description {
        id: String,
        text: Option<String>,
    },
    Announce(bool),
    Locked(bool),
    /// People asked to join (or withdrew their request) a group that needs approval.
    JoinRequests {
        requesters: Vec<String>,
        revoked: bool,
    },
    /// The group was created with this account in it.
    Created {
        name: Option<String>,
    },
    /// Anything else (ephemeral settings, add mode, …): the group's metadata should be read
    /// again.
    Other,
}

/// A message that reached this session: from someone else, or sent by this account from
/// another device (`from_me`). JIDs as in [`GroupNotification`].
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingMessage {
    pub id: String,
    pub chat: String,
    pub sender: String,
    pub push_name: String,
    pub is_group: bool,
    pub from_me: bool,
    /// Unix seconds, the message's own timestamp.
    pub timestamp: u64,
    /// Delivered from WhatsApp's offline queue rather than live.
    pub offline: bool,
    pub quoted_id: Option<String>,
    pub content: MessageContent,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MessageContent {
    Text(String),
    Media {
        kind: MediaKind,
        mimetype: Option<String>,
        size: Option<u64>,
        caption: Option<String>,
        file_name: Option<String>,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
    },
    Contact {
        display_name: Option<String>,
        vcard: Option<String>,
    },
    Reaction {
        message_id: String,
        emoji: String,
    },
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Document => "document",
            Self::Sticker => "sticker",
        }
    }
}

/// How far a message this account sent has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    Server,
    Delivered,
    Read,
    Played,
}

impl AckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Played => "played",
        }
    }
}

/// A receipt for messages this account sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAck {
    pub chat: String,
    /// Who acknowledged (the server's JID for `server`).
    pub by: String,
    pub message_ids: Vec<String>,
    pub status: AckStatus,
    /// Unix seconds.
    pub timestamp: u64,
}

/// `GET /groups` entry.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct GroupSummary {
    pub jid: String,
    pub name: String,
    pub participant_count: usize,
}

/// A view serialized to JSON once, for replies that serve the same bytes many times; `T` names
/// the view the bytes hold, so the façade's signatures keep their types.
pub struct Rendered<T> {
    json: bytes::Bytes,
    view: std::marker::PhantomData<fn() -> T>,
}

impl<T: Serialize> Rendered<T> {
    pub fn render(view: &T) -> crate::error::Result<Self> {
        serde_json::to_vec(view)
            .map(|json| Rendered {
                json: json.into(),
                view: std::marker::PhantomData,
            })
            .map_err(|e| crate::error::GatewayError::Internal(format!("rendering a reply: {e}")))
    }
}

impl<T> Rendered<T> {
    /// The JSON, shared rather than copied.
    pub fn json(&self) -> bytes::Bytes {
        self.json.clone()
    }
}

impl<T> Clone for Rendered<T> {
    fn clone(&self) -> Self {
        Rendered {
            json: self.json.clone(),
            view: std::marker::PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Rendered<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("json", &String::from_utf8_lossy(&self.json))
            .finish()
    }
}

/// `GET /groups/{jid}`: groups.md's fields, plus `subject` (the same as `name`) and
/// `addressing_mode` (`pn` or `lid`), which clients written for waxum read.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct GroupView {
    pub jid: String,
    pub name: String,
    pub subject: String,
    pub topic: String,
    pub participant_count: usize,
    pub created_at: u64,
    pub addressing_mode: String,
}

/// `GET /groups/{jid}/info`, with the same additions.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct GroupInfoView {
    pub jid: String,
    pub name: String,
    pub subject: String,
    pub topic: String,
    pub owner: Option<String>,
    pub created_at: u64,
    pub addressing_mode: String,
    pub participants: Vec<ParticipantView>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ParticipantView {
    pub jid: String,
    pub role: String,
    /// The participant's phone-number JID when WhatsApp gave it.
    pub phone_number: Option<String>,
}

/// Who may add members to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberAddMode {
    AdminAdd,
    AllMemberAdd,
}

impl MemberAddMode {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin_add" => Some(Self::AdminAdd),
            "all_member_add" => Some(Self::AllMemberAdd),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdminAdd => "admin_add",
            Self::AllMemberAdd => "all_member_add",
        }
    }
}

/// Who may share a group's invite link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberLinkMode {
    AdminLink,
    AllMemberLink,
}

impl MemberLinkMode {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin_link" => Some(Self::AdminLink),
            "all_member_link" => Some(Self::AllMemberLink),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdminLink => "admin_link",
            Self::AllMemberLink => "all_member_link",
        }
    }
}

/// A change to a group's settings; absent fields stay as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupSettingsChange {
    pub announce: Option<bool>,
    pub locked: Option<bool>,
    pub member_add_mode: Option<MemberAddMode>,
    pub member_link_mode: Option<MemberLinkMode>,
    /// Whether joining needs an admin's approval.
    pub membership_approval: Option<bool>,
}

impl GroupSettingsChange {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One participant's outcome of an add or remove.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ParticipantResult {
    pub jid: String,
    pub status: String,
}

/// `GET /groups/invite-info`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct InviteInfoView {
    pub jid: String,
    pub name: String,
    pub topic: String,
    pub owner: Option<String>,
    pub created_at: u64,
    pub participant_count: usize,
}

/// A text to send, and the message it replies to.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingText {
    pub text: String,
    pub quote: Option<Quote>,
}

impl OutgoingText {
    pub fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            quote: None,
        }
    }
}

/// The message a reply quotes, as WhatsApp shows it above the reply: its id, who sent it and
/// its text (none for media and the like, which show without a preview).
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub id: String,
    pub sender: String,
    pub text: Option<String>,
}

/// `POST /messages/text`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct SentMessage {
    pub message_id: String,
    pub timestamp: u64,
}

#[cfg(test)]
mod jid_tests {
    use super::*;

    #[test]
    fn jids_follow_the_contract() {
        assert_eq!(
            UserJid::parse("628123456789@s.whatsapp.net")
                .unwrap()
                .as_str(),
            "628123456789@s.whatsapp.net"
        );
        assert_eq!(
            UserJid::parse("+62 812-3456-789").unwrap().as_str(),
            "628123456789@s.whatsapp.net"
        );
        assert_eq!(UserJid::parse("1234@lid").unwrap().as_str(), "1234@lid");
        assert!(UserJid::parse("abc@s.whatsapp.net").is_none());
        assert!(UserJid::parse("123456789-1234567890@g.us").is_none());
        assert_eq!(
            GroupJid::parse("123456789-1234567890@g.us")
                .unwrap()
                .as_str(),
            "123456789-1234567890@g.us"
        );
        assert_eq!(
            GroupJid::parse("123456789-1234567890").unwrap().as_str(),
            "123456789-1234567890@g.us"
        );
        assert_eq!(
            GroupJid::parse("120363000000000001").unwrap().as_str(),
            "120363000000000001@g.us"
        );
        assert_eq!(
            GroupJid::parse("120363000000000001@g.us").unwrap().as_str(),
            "120363000000000001@g.us"
        );
        assert!(GroupJid::parse("628123456789").is_none());
        assert!(GroupJid::parse("hello@g.us").is_none());
        assert!(matches!(
            ChatJid::parse("628123456789"),
            Some(ChatJid::User(_))
        ));
        assert!(matches!(
            ChatJid::parse("120363000000000001"),
            Some(ChatJid::Group(_))
        ));
        assert!(ChatJid::parse("not a jid").is_none());
        // A phone number written with one hyphen is that user, not a group.
        assert_eq!(
            ChatJid::parse("62812-3456789").map(|c| c.as_str().to_owned()),
            Some("628123456789@s.whatsapp.net".to_owned())
        );
        assert!(matches!(
            ChatJid::parse("123456789-1234567890"),
            Some(ChatJid::Group(_))
        ));
    }
}
