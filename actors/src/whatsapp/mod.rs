//! The WhatsApp port: the only code that imports whatsapp-rust. It builds and drives each
//! session's client ([`connection`]), performs every WhatsApp operation with its timeout and
//! its own reading of WhatsApp's error codes ([`errors`]), speaks the project's model types in
//! and out, and turns the client's event stream into [`WaEvent`]s ([`events`]).
//!
//! At most one live client per session, ever: see [`connection::ClientSlots`].

pub mod connection;
pub mod errors;
pub mod events;
pub mod inbound;
pub mod reconnect;
pub mod session_store;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use whatsapp_rust::pair_code::{PairCodeOptions, PairError};
use whatsapp_rust::types::message::AddressingMode;
use whatsapp_rust::wacore::proto_helpers::build_quote_context;
use whatsapp_rust::waproto::buffa::MessageField;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{
    Client, GroupCreateOptions, GroupDescription, GroupError, GroupMetadata,
    GroupParticipantOptions, GroupSubject, IqError, Jid, MemberAddMode as WaMemberAddMode,
    MemberLinkMode as WaMemberLinkMode, MembershipApprovalMode, MexError, ParticipantType,
    PreviousDescription,
};

use crate::error::{GatewayError, Result};
use crate::group_cache::{CachedGroup, CachedParticipant, ParticipantAction, ParticipantAnswer};
use crate::model::{
    ChatJid, GroupJid, GroupSettingsChange, InviteInfoView, MemberAddMode, MemberLinkMode,
    OutgoingText, SentMessage, UserJid,
};
use crate::telemetry::Telemetry;

pub use connection::{ClientSlots, Connection, ConnectionEnv};
pub use errors::{Operation, WaFailure};
pub use events::{
    ConnectionExit, ConnectionReport, GroupChange, GroupNotification, Identity, PairedDevice,
    ReportKind, WaEvent,
};

/// The message a text becomes: plain, or, for a reply, an extended text whose context quotes
/// the message it answers.
fn text_message(outgoing: OutgoingText) -> wa::Message {
    let Some(quote) = outgoing.quote else {
        return wa::Message {
            conversation: Some(outgoing.text),
            ..Default::default()
        };
    };
    let quoted = wa::Message {
        conversation: quote.text,
        ..Default::default()
    };
    wa::Message {
        extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
            text: Some(outgoing.text),
            context_info: MessageField::some(build_quote_context(quote.id, quote.sender, &quoted)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A session's logged-in (or logging-in) client, with every operation the gateway uses.
/// Cheap to clone; every call is bounded by `timeout`.
#[derive(Clone)]
pub struct WaClient {
    client: Arc<Client>,
    timeout: Duration,
    telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for WaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaClient")
            .field("connected", &self.client.is_connected())
            .finish()
    }
}

fn iq_failure(e: &IqError) -> WaFailure {
    match e {
        IqError::Timeout => WaFailure::Timeout,
        IqError::NotConnected | IqError::Disconnected(_) | IqError::InternalChannelClosed => {
            WaFailure::NotConnected
        }
        IqError::ServerError {
            code,
            text,
            backoff,
            ..
        } => WaFailure::Server {
            code: *code,
            text: text.clone(),
            backoff: *backoff,
        },
        other => WaFailure::Other(other.to_string()),
    }
}

fn group_failure(e: GroupError) -> std::result::Result<WaFailure, GatewayError> {
    match e {
        GroupError::Iq(iq) => Ok(iq_failure(&iq)),
        GroupError::Mex(mex) => mex_failure(mex),
        GroupError::DescriptionConflict => Err(GatewayError::DescriptionConflict),
        GroupError::InvalidRequest(m) => Err(GatewayError::validation("request", m)),
        other => Ok(WaFailure::Other(other.to_string())),
    }
}

fn parse_jid(raw: &str, field: &str) -> Result<Jid> {
    raw.parse::<Jid>()
        .map_err(|e| GatewayError::validation(field, e.to_string()))
}

fn user_jids(users: &[UserJid]) -> Result<Vec<Jid>> {
    users
        .iter()
        .map(|u| parse_jid(u.as_str(), "participants"))
        .collect()
}

fn group_jid_of(jid: &Jid) -> Result<GroupJid> {
    let raw = jid.to_non_ad_string();
    GroupJid::parse(&raw).ok_or_else(|| GatewayError::WhatsApp {
        code: None,
        message: format!("WhatsApp returned an unexpected group id {raw}"),
    })
}

/// A failed MEX (GraphQL) mutation in the same terms as an IQ's.
fn mex_failure(e: MexError) -> std::result::Result<WaFailure, GatewayError> {
    Ok(match e {
        MexError::Request(iq) => iq_failure(&iq),
        MexError::ExtensionError { code, message } => match u16::try_from(code) {
            Ok(code @ 400..=599) => WaFailure::Server {
                code,
                text: message,
                backoff: None,
            },
            _ => WaFailure::Other(format!("{code}: {message}")),
        },
        other => WaFailure::Other(other.to_string()),
    })
}

fn wa_add_mode(mode: MemberAddMode) -> WaMemberAddMode {
    match mode {
        MemberAddMode::AdminAdd => WaMemberAddMode::AdminAdd,
        MemberAddMode::AllMemberAdd => WaMemberAddMode::AllMemberAdd,
    }
}

fn wa_link_mode(mode: MemberLinkMode) -> WaMemberLinkMode {
    match mode {
        MemberLinkMode::AdminLink => WaMemberLinkMode::AdminLink,
        MemberLinkMode::AllMemberLink => WaMemberLinkMode::AllMemberLink,
    }
}

fn approval_mode(on: bool) -> MembershipApprovalMode {
    if on {
        MembershipApprovalMode::On
    } else {
        MembershipApprovalMode::Off
    }
}

/// What the cache keeps of WhatsApp's group metadata.
fn cached_group(meta: &GroupMetadata) -> CachedGroup {
    CachedGroup {
        jid: meta.id.to_non_ad_string(),
        name: meta.subject.clone(),
        topic: meta.description.clone(),
        topic_id: meta.description_id.clone(),
        owner: meta
            .creator_pn
            .as_ref()
            .or(meta.creator.as_ref())
            .map(|j| j.to_non_ad_string()),
        created_at: meta.creation_time.unwrap_or(0),
        participants: meta
            .participants
            .iter()
            .map(|p| CachedParticipant {
                jid: p.phone_number.as_ref().unwrap_or(&p.jid).to_non_ad_string(),
                role: match p.participant_type {
                    ParticipantType::SuperAdmin => "superadmin",
                    ParticipantType::Admin => "admin",
                    ParticipantType::Member => "member",
                }
                .to_owned(),
                phone_number: p
                    .phone_number
                    .as_ref()
                    .or((!p.jid.is_lid()).then_some(&p.jid))
                    .map(|j| j.to_non_ad_string()),
            })
            .collect(),
        announce: meta.is_announcement,
        locked: meta.is_locked,
        fetched_at: crate::unix_now(),
        addressing_mode: match meta.addressing_mode {
            AddressingMode::Lid => "lid",
            AddressingMode::Pn => "pn",
        }
        .to_owned(),
        member_add_mode: meta.member_add_mode.map(|m| {
            match m {
                WaMemberAddMode::AdminAdd => MemberAddMode::AdminAdd,
                WaMemberAddMode::AllMemberAdd => MemberAddMode::AllMemberAdd,
            }
            .as_str()
            .to_owned()
        }),
        member_link_mode: meta.member_link_mode.map(|m| {
            match m {
                WaMemberLinkMode::AdminLink => MemberLinkMode::AdminLink,
                WaMemberLinkMode::AllMemberLink => MemberLinkMode::AllMemberLink,
            }
            .as_str()
            .to_owned()
        }),
        membership_approval: meta.membership_approval,
    }
}

impl WaClient {
    fn new(client: Arc<Client>, timeout: Duration, telemetry: Arc<Telemetry>) -> Self {
        Self {
            client,
            timeout,
            telemetry,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Who this client is logged in as.
    pub fn identity(&self) -> Identity {
        let pn = self.client.pn();
        let push_name = self.client.push_name();
        Identity {
            phone: pn.as_ref().map(|j| j.user.to_string()),
            device: pn.as_ref().map(|j| j.device),
            lid: self.client.lid().map(|j| j.to_string()),
            push_name: (!push_name.is_empty()).then_some(push_name),
        }
    }

    /// This account as a group participant JID.
    pub fn own_user(&self) -> Option<String> {
        self.client.pn().map(|j| j.to_non_ad_string())
    }

    /// Runs one round-trip within the timeout; `map` gives its failure a meaning.
    async fn bounded<T, E>(
        &self,
        operation: Operation,
        work: impl Future<Output = std::result::Result<T, E>>,
        failure: impl FnOnce(E) -> std::result::Result<WaFailure, GatewayError>,
    ) -> Result<T> {
        let started = std::time::Instant::now();
        let (outcome, result) = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(value)) => ("ok", Ok(value)),
            Ok(Err(e)) => (
                "error",
                Err(match failure(e) {
                    Ok(f) => errors::meaning(operation, f, self.timeout),
                    Err(direct) => direct,
                }),
            ),
            Err(_) => ("timeout", Err(GatewayError::WhatsAppTimeout(self.timeout))),
        };
        self.telemetry
            .observe_whatsapp(operation.label(), outcome, started.elapsed());
        result
    }

    pub async fn group(&self, jid: &GroupJid) -> Result<CachedGroup> {
        let target = parse_jid(jid.as_str(), "group_jid")?;
        let groups = self.client.groups();
        let meta = self
            .bounded(
                Operation::GroupQuery,
                groups.get_metadata(&target),
                group_failure,
            )
            .await?;
        Ok(cached_group(&meta))
    }

    pub async fn participating_groups(&self) -> Result<Vec<CachedGroup>> {
        let groups = self.client.groups();
        let all = self
            .bounded(
                Operation::GroupQuery,
                groups.get_participating(),
                group_failure,
            )
            .await?;
        Ok(all.values().map(cached_group).collect())
    }

    /// Creates a group; the modes in `settings` are part of the creation.
    pub async fn create_group(
        &self,
        name: String,
        participants: &[UserJid],
        settings: GroupSettingsChange,
    ) -> Result<CachedGroup> {
        let subject =
            GroupSubject::new(name).map_err(|e| GatewayError::validation("name", e.to_string()))?;
        let mut options = GroupCreateOptions {
            subject: subject.into_string(),
            participants: user_jids(participants)?
                .into_iter()
                .map(GroupParticipantOptions::new)
                .collect(),
            ..Default::default()
        };
        if let Some(mode) = settings.member_add_mode {
            options.member_add_mode = Some(wa_add_mode(mode));
        }
        if let Some(mode) = settings.member_link_mode {
            options.member_link_mode = Some(wa_link_mode(mode));
        }
        if let Some(on) = settings.membership_approval {
            options.membership_approval_mode = Some(approval_mode(on));
        }
        let groups = self.client.groups();
        let created = self
            .bounded(
                Operation::GroupChange,
                groups.create_group(options),
                group_failure,
            )
            .await?;
        Ok(cached_group(&created.metadata))
    }

    /// Sets the subject; returns it as WhatsApp stores it.
    pub async fn set_subject(&self, jid: &GroupJid, subject: String) -> Result<String> {
        let target = parse_jid(jid.as_str(), "group_jid")?;
        let subject = GroupSubject::new(subject)
            .map_err(|e| GatewayError::validation("subject", e.to_string()))?;
        let text = subject.as_str().to_owned();
        let groups = self.client.groups();
        self.bounded(
            Operation::GroupChange,
            groups.set_subject(target, subject),
            group_failure,
        )
        .await?;
        Ok(text)
    }

    /// Sets (or, with `None`, deletes) the description; `prev_id` guards against overwriting
    /// a change made since it was read. Returns the group as WhatsApp now has it, when the
    /// read-back succeeds (the new description id is chosen inside the client).
    pub async fn set_description(
        &self,
        jid: &GroupJid,
        description: Option<String>,
        prev_id: Option<String>,
    ) -> Result<Option<CachedGroup>> {
        let target = parse_jid(jid.as_str(), "group_jid")?;
        let description = description
            .map(|d| {
                GroupDescription::new(d)
                    .map_err(|e| GatewayError::validation("description", e.to_string()))
            })
            .transpose()?;
        let prev = match prev_id.as_deref() {
            Some(id) => PreviousDescription::Id(id),
            None => PreviousDescription::Resolve,
        };
        let groups = self.client.groups();
        self.bounded(
            Operation::GroupChange,
            groups.set_description(target.clone(), description, prev),
            group_failure,
        )
        .await?;
        Ok(self.group(jid).await.ok())
    }

    pub async fn leave_group(&self, jid: &GroupJid) -> Result<()> {
        let target = parse_jid(jid.as_str(), "group_jid")?;
        let groups = self.client.groups();
        self.bounded(Operation::GroupChange, groups.leave(target), group_failure)
            .await
    }

    /// Adds, removes, promotes or demotes; WhatsApp answers per participant.
    pub async fn change_participants(
        &self,
        jid: &GroupJid,
        action: ParticipantAction,
        users: &[UserJid],
    ) -> Result<Vec<ParticipantAnswer>> {
        let target = parse_jid(jid.as_str(), "group_jid")?;
        let users = user_jids(users)?;
        let groups = self.client.groups();
        type Answers<'a> = std::pin::Pin<
            Box<
                dyn Future<
                        Output = std::result::Result<
                            Vec<whatsapp_rust::ParticipantChangeResponse>,
                            GroupError,
                        >,
                    > + Send
                    + 'a,
            >,
        >;
        let work: Answers<'_> = match action {
            ParticipantAction::Add => Box::pin(groups.add_participants(target, &users)),
            ParticipantAction::Remove => Box::pin(groups.remove_participants(target, &users)),
            ParticipantAction::Promote => Box::pin(groups.promote_participants(target, &users)),
            ParticipantAction::Demote => Box::pin(groups.demote_participants(target, &users)),
        };
        let answers = self
            .bounded(Operation::GroupChange, work, group_failure)
            .await?;
        Ok(answers
            .iter()
            .map(|a| ParticipantAnswer {
                jid: a.jid.to_non_ad_string(),
                error: a.error.clone(),
                invite_offered: a.add_request.is_some(),
            })
            .collect())
    }

    pub async fn set_announce(&self, jid: &GroupJid, on: bool) -> Result<()> {
        let target = parse_jid(jid.as_str(), "group_jid")?;
        let groups = self.client.groups();
        self.bounded(
            Operation::GroupChange,
            groups.set_announce(target, on),
            group_failure,
        )
        .await
    }

    pub async fn set_member_add_mode(&self, jid: &GroupJid, mode: MemberAddMode) -> Result<()> {
        let target = parse_jid(jid.as_str(), "group_jid")?;
        let groups = self.client.groups();
        self.bounded(
            Operation::GroupChange,
            groups.set_member_add_mode(target, wa_add_mode(mode)),
            group_failure,
        )
        .await
    }

    pub async fn set_member_link_mode(&self, jid: &GroupJid, mode: MemberLinkMode) -> Result<()> {
        let target = parse_jid(jid.as_str(), "group_jid")?;
        let groups = self.client.groups();
        self.bounded(
            Operation::GroupChange,
            groups.set_member_link_mode(&target, wa_link_mode(mode)),
            group_failure,
        )
        .await
    }

    pub async fn set_membership_approval(&self, jid: &GroupJid, on: bool) -> Result<()> {
        let target = parse_jid(jid.as_str(), "group_jid")?;
        let groups = self.client.groups();
        self.bounded(
            Operation::GroupChange,
            groups.set_membership_approval(target, approval_mode(on)),
            group_failure,
        )
        .await
    }

    pub async fn set_locked(&self, jid: &GroupJid, on: bool) -> Result<()> {
        let target = parse_jid(jid.as_str(), "group_jid")?;
        let groups = self.client.groups();
        self.bounded(
            Operation::GroupChange,
            groups.set_locked(target, on),
            group_failure,
        )
        .await
    }

    /// The group's invite link; `reset` revokes the current one first.
    pub async fn invite_link(&self, jid: &GroupJid, reset: bool) -> Result<String> {
        let target = parse_jid(jid.as_str(), "group_jid")?;
        let groups = self.client.groups();
        self.bounded(
            Operation::InviteLink,
            groups.get_invite_link(target, reset),
            group_failure,
        )
        .await
    }

    pub async fn join_with_invite(&self, code: &str) -> Result<GroupJid> {
        let groups = self.client.groups();
        let joined = self
            .bounded(
                Operation::InviteCode,
                groups.join_with_invite_code(code),
                group_failure,
            )
            .await?;
        group_jid_of(joined.group_jid())
    }

    pub async fn invite_info(&self, code: &str) -> Result<InviteInfoView> {
        let groups = self.client.groups();
        let meta = self
            .bounded(
                Operation::InviteCode,
                groups.get_invite_info(code),
                group_failure,
            )
            .await?;
        let group = cached_group(&meta);
        Ok(InviteInfoView {
            participant_count: meta
                .size
                .map(|s| s as usize)
                .unwrap_or(group.participants.len()),
            jid: group.jid,
            name: group.name,
            topic: group.topic.unwrap_or_default(),
            owner: group.owner,
            created_at: group.created_at,
        })
    }

    /// Sends a text; answers once the client has put it on the wire.
    /// Sends a text; a reply carries the quoted message's id, sender and text.
    pub async fn send_text(&self, to: &ChatJid, outgoing: OutgoingText) -> Result<SentMessage> {
        let target = parse_jid(to.as_str(), "to")?;
        if !self.client.is_connected() {
            return Err(errors::meaning(
                Operation::SendMessage,
                WaFailure::NotConnected,
                self.timeout,
            ));
        }
        let client = &self.client;
        let sent = self
            .bounded(
                Operation::SendMessage,
                client.send_message(target, text_message(outgoing)),
                |e| {
                    // A send that fails because the socket went away was never WhatsApp's
                    // answer.
                    Ok(if client.is_connected() {
                        WaFailure::Other(e.to_string())
                    } else {
                        WaFailure::NotConnected
                    })
                },
            )
            .await?;
        Ok(SentMessage {
            message_id: sent.message_id,
            timestamp: crate::unix_now(),
        })
    }

    /// Requests a pair code for `phone` (digits only) once the socket is up.
    pub async fn request_pair_code(&self, phone: String) -> Result<String> {
        let client = &self.client;
        let timeout = self.timeout;
        let work = async move {
            client
                .wait_for_socket(timeout)
                .await
                .map_err(|_| PairFailure::NoSocket)?;
            client
                .pair_with_code(PairCodeOptions {
                    phone_number: phone,
                    ..Default::default()
                })
                .await
                .map_err(PairFailure::Pair)
        };
        self.bounded(Operation::PairCode, work, |e| match e {
            PairFailure::NoSocket => Ok(WaFailure::NotConnected),
            PairFailure::Pair(PairError::RequestFailed(iq)) => Ok(iq_failure(&iq)),
            PairFailure::Pair(other) => Ok(WaFailure::Other(other.to_string())),
        })
        .await
    }

    /// Unlinks this device on WhatsApp's side (best effort: a client that is offline cannot).
    pub async fn logout(&self) -> Result<()> {
        tokio::time::timeout(self.timeout, self.client.logout())
            .await
            .map_err(|_| GatewayError::WhatsAppTimeout(self.timeout))
    }
}

enum PairFailure {
    NoSocket,
    Pair(PairError),
}

/// Where a session's client keeps its credentials.
pub fn credentials_dir(sessions_dir: &Path, id: &str) -> PathBuf {
    sessions_dir.join(id)
}

fn credentials_db(sessions_dir: &Path, id: &str) -> PathBuf {
    credentials_dir(sessions_dir, id).join("whatsapp.db")
}

/// Whether a credential store exists for the session (pairing data may be inside).
pub fn has_credentials(sessions_dir: &Path, id: &str) -> bool {
    credentials_db(sessions_dir, id).exists()
}

/// Deletes the session's credential store and its copies of sent messages. Call only once its
/// client is stopped.
pub async fn erase_credentials(env: &ConnectionEnv, id: &str) -> Result<()> {
    let dir = credentials_dir(&env.sessions_dir, id);
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(GatewayError::Storage(format!(
                "could not erase credentials of session {id}: {e}"
            )));
        }
    }
    let (sent, session) = (env.sent_messages.clone(), id.to_owned());
    tokio::task::spawn_blocking(move || sent.forget_session(&session))
        .await
        .map_err(|e| GatewayError::Internal(format!("erasing sent messages: {e}")))?
        .map_err(|e| GatewayError::Storage(format!("erasing sent messages of {id}: {e}")))?;
    Ok(())
}
