//! A session's group metadata cache as plain data: what is kept per group, how a write's
//! answer or a WhatsApp notification changes it, and how participant answers read. The groups
//! actor owns one and persists what changes; readers get immutable snapshots of it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use crate::error::GatewayError;
use crate::model::{
    GroupChange, GroupInfoView, GroupNotification, GroupSettingsChange, GroupSummary, GroupView,
    ParticipantResult, ParticipantView, Rendered, UserJid,
};

/// What the cache keeps of a group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CachedGroup {
    pub jid: String,
    pub name: String,
    pub topic: Option<String>,
    pub topic_id: Option<String>,
    pub owner: Option<String>,
    pub created_at: u64,
    pub participants: Vec<CachedParticipant>,
    pub announce: bool,
    pub locked: bool,
    /// When WhatsApp last answered a query for this group (Unix seconds); 0 marks it stale.
    pub fetched_at: u64,
    /// `pn` or `lid`: how WhatsApp addresses the group's members.
    #[serde(default = "pn_addressing")]
    pub addressing_mode: String,
    #[serde(default)]
    pub member_add_mode: Option<String>,
    #[serde(default)]
    pub member_link_mode: Option<String>,
    #[serde(default)]
    pub membership_approval: bool,
}

fn pn_addressing() -> String {
    "pn".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CachedParticipant {
    pub jid: String,
    pub role: String,
    /// The phone-number JID, when known.
    #[serde(default)]
    pub phone_number: Option<String>,
}

impl CachedParticipant {
    /// A participant known by one JID: its phone number is known when that JID is one.
    pub fn new(jid: String, role: &str) -> Self {
        let phone_number = jid.ends_with("@s.whatsapp.net").then(|| jid.clone());
        Self {
            jid,
            role: role.to_owned(),
            phone_number,
        }
    }
}

impl CachedGroup {
    pub fn summary(&self) -> GroupSummary {
        GroupSummary {
            jid: self.jid.clone(),
            name: self.name.clone(),
            participant_count: self.participants.len(),
        }
    }

    pub fn view(&self) -> GroupView {
        GroupView {
            jid: self.jid.clone(),
            name: self.name.clone(),
            subject: self.name.clone(),
            topic: self.topic.clone().unwrap_or_default(),
            participant_count: self.participants.len(),
            created_at: self.created_at,
            addressing_mode: self.addressing_mode.clone(),
        }
    }

    pub fn info(&self) -> GroupInfoView {
        GroupInfoView {
            jid: self.jid.clone(),
            name: self.name.clone(),
            subject: self.name.clone(),
            topic: self.topic.clone().unwrap_or_default(),
            owner: self.owner.clone(),
            created_at: self.created_at,
            addressing_mode: self.addressing_mode.clone(),
            participants: self
                .participants
                .iter()
                .map(|p| ParticipantView {
                    jid: p.jid.clone(),
                    role: p.role.clone(),
                    phone_number: p.phone_number.clone(),
                })
                .collect(),
        }
    }

    pub fn role_of(&self, user: &str) -> Option<&str> {
        self.participants
            .iter()
            .find(|p| p.jid == user)
            .map(|p| p.role.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParticipantAction {
    Add,
    Remove,
    Promote,
    Demote,
}

/// A cache patch that follows a successful write or a notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    None,
    Upsert(CachedGroup),
    Remove(String),
    Subject(String, String),
    Description {
        jid: String,
        id: String,
        text: Option<String>,
    },
    Participants(String, ParticipantAction, Vec<String>),
    Settings(String, GroupSettingsChange),
    /// Keep the entry but read it again on the next request.
    Stale(String),
}

/// What a notification asks of the cache.
#[derive(Debug, Clone, PartialEq)]
pub enum NotificationEffect {
    Patch(Box<Change>),
    /// The group is new to this account (or the change cannot be patched): query it.
    Refetch(String),
    /// Nothing the cache holds changed (e.g. a join request).
    Nothing,
}

/// An immutable view of the cache, shared with readers that must not wait on the actor.
#[derive(Debug, Default, Clone)]
pub struct GroupsSnapshot {
    /// When the full list was last fetched (Unix seconds); 0 when never.
    pub list_fetched_at: u64,
    pub groups: BTreeMap<String, Arc<CachedGroup>>,
    pub departed: BTreeMap<String, String>,
    /// Each group's replies, rendered on first read: a snapshot never changes, so neither do
    /// they, and every reader of the snapshot shares them.
    renders: BTreeMap<String, GroupRenders>,
}

#[derive(Debug, Default, Clone)]
struct GroupRenders {
    view: OnceLock<Rendered<GroupView>>,
    info: OnceLock<Rendered<GroupInfoView>>,
}

/// The value in `cell`, rendered from `view()` on first use.
fn rendered_once<T: Serialize>(
    cell: &OnceLock<Rendered<T>>,
    view: impl FnOnce() -> T,
) -> Result<Rendered<T>, GatewayError> {
    if let Some(done) = cell.get() {
        return Ok(done.clone());
    }
    let fresh = Rendered::render(&view())?;
    Ok(cell.get_or_init(|| fresh).clone())
}

impl GroupsSnapshot {
    /// A group's name: cached, or remembered from before this account left it.
    pub fn name_of(&self, jid: &str) -> Option<String> {
        self.groups
            .get(jid)
            .map(|g| g.name.clone())
            .or_else(|| self.departed.get(jid).cloned())
    }
}

impl GroupsSnapshot {
    pub fn summaries(&self) -> Vec<GroupSummary> {
        self.groups.values().map(|g| g.summary()).collect()
    }

    /// The list, when it was fetched within `max_age_secs` of `now`.
    pub fn fresh_list(&self, now: u64, max_age_secs: u64) -> Option<Vec<GroupSummary>> {
        (self.list_fetched_at > 0 && is_fresh(self.list_fetched_at, now, max_age_secs))
            .then(|| self.summaries())
    }

    /// One group, however old: enough to know whether this account may send to it.
    pub fn group(&self, jid: &str) -> Option<Arc<CachedGroup>> {
        self.groups.get(jid).cloned()
    }

    /// One group, when it was fetched within `max_age_secs` of `now`.
    pub fn fresh_group(&self, jid: &str, now: u64, max_age_secs: u64) -> Option<Arc<CachedGroup>> {
        self.groups
            .get(jid)
            .filter(|g| is_fresh(g.fetched_at, now, max_age_secs))
            .cloned()
    }

    /// A fresh group's `GET /groups/{jid}` reply (see [`Self::fresh_group`]).
    pub fn fresh_view(
        &self,
        jid: &str,
        now: u64,
        max_age_secs: u64,
    ) -> Option<Result<Rendered<GroupView>, GatewayError>> {
        self.fresh_reply(jid, now, max_age_secs, |r| &r.view, CachedGroup::view)
    }

    /// A fresh group's `GET /groups/{jid}/info` reply (see [`Self::fresh_group`]).
    pub fn fresh_info(
        &self,
        jid: &str,
        now: u64,
        max_age_secs: u64,
    ) -> Option<Result<Rendered<GroupInfoView>, GatewayError>> {
        self.fresh_reply(jid, now, max_age_secs, |r| &r.info, CachedGroup::info)
    }

    /// A fresh group's reply from the cell `slot` picks, rendered from `view` on first read.
    fn fresh_reply<T: Serialize>(
        &self,
        jid: &str,
        now: u64,
        max_age_secs: u64,
        slot: impl FnOnce(&GroupRenders) -> &OnceLock<Rendered<T>>,
        view: impl FnOnce(&CachedGroup) -> T,
    ) -> Option<Result<Rendered<T>, GatewayError>> {
        let group = self.fresh_group(jid, now, max_age_secs)?;
        let cell = slot(self.renders.get(jid)?);
        Some(rendered_once(cell, || view(&group)))
    }
}

pub fn is_fresh(fetched_at: u64, now: u64, max_age_secs: u64) -> bool {
    fetched_at > 0 && now.saturating_sub(fetched_at) < max_age_secs
}

/// The cache itself. Entries are behind `Arc` so that publishing a snapshot copies pointers,
/// not groups.
#[derive(Debug, Default)]
pub struct GroupCache {
    pub list_fetched_at: u64,
    groups: BTreeMap<String, Arc<CachedGroup>>,
    /// Names of groups this account recently left, so events about leaving can name them.
    departed: BTreeMap<String, String>,
}

/// How many departed groups' names are remembered.
const DEPARTED_NAMES: usize = 256;

impl GroupCache {
    pub fn new(list_fetched_at: u64, groups: impl IntoIterator<Item = CachedGroup>) -> Self {
        Self {
            list_fetched_at,
            groups: groups
                .into_iter()
                .map(|g| (g.jid.clone(), Arc::new(g)))
                .collect(),
            departed: BTreeMap::new(),
        }
    }

    pub fn get(&self, jid: &str) -> Option<&CachedGroup> {
        self.groups.get(jid).map(Arc::as_ref)
    }

    /// The entry itself, shared rather than copied.
    pub fn get_shared(&self, jid: &str) -> Option<Arc<CachedGroup>> {
        self.groups.get(jid).cloned()
    }

    pub fn contains(&self, jid: &str) -> bool {
        self.groups.contains_key(jid)
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn jids(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }

    pub fn groups(&self) -> impl Iterator<Item = &CachedGroup> {
        self.groups.values().map(Arc::as_ref)
    }

    pub fn snapshot(&self) -> GroupsSnapshot {
        GroupsSnapshot {
            list_fetched_at: self.list_fetched_at,
            groups: self.groups.clone(),
            departed: self.departed.clone(),
            renders: self
                .groups
                .keys()
                .map(|jid| (jid.clone(), GroupRenders::default()))
                .collect(),
        }
    }

    /// Replaces everything with a fresh list from WhatsApp; returns the groups that are gone.
    pub fn replace_all(&mut self, groups: Vec<CachedGroup>, now: u64) -> Vec<String> {
        let fresh: BTreeMap<String, Arc<CachedGroup>> = groups
            .into_iter()
            .map(|g| (g.jid.clone(), Arc::new(g)))
            .collect();
        let gone = self
            .groups
            .keys()
            .filter(|k| !fresh.contains_key(*k))
            .cloned()
            .collect();
        self.groups = fresh;
        self.list_fetched_at = now;
        gone
    }

    /// Applies a change; returns the group it touched (to persist), if any. `own_user` is this
    /// account's JID: removing it from a group drops the group.
    pub fn apply(&mut self, change: Change, own_user: Option<&str>) -> Option<String> {
        match change {
            Change::None => None,
            Change::Upsert(group) => {
                let jid = group.jid.clone();
                self.groups.insert(jid.clone(), Arc::new(group));
                Some(jid)
            }
            Change::Remove(jid) => {
                let group = self.groups.remove(&jid)?;
                if self.departed.len() >= DEPARTED_NAMES {
                    self.departed.pop_first();
                }
                self.departed.insert(jid.clone(), group.name.clone());
                Some(jid)
            }
            Change::Subject(jid, subject) => self.patch(jid, |g| g.name = subject),
            Change::Description { jid, id, text } => self.patch(jid, |g| {
                g.topic_id = text.as_ref().map(|_| id);
                g.topic = text;
            }),
            Change::Settings(jid, change) => self.patch(jid, |g| {
                if let Some(mode) = change.member_add_mode {
                    g.member_add_mode = Some(mode.as_str().to_owned());
                }
                if let Some(mode) = change.member_link_mode {
                    g.member_link_mode = Some(mode.as_str().to_owned());
                }
                if let Some(on) = change.membership_approval {
                    g.membership_approval = on;
                }
                let (announce, locked) = (change.announce, change.locked);
                if let Some(a) = announce {
                    g.announce = a;
                }
                if let Some(l) = locked {
                    g.locked = l;
                }
            }),
            Change::Stale(jid) => self.patch(jid, |g| g.fetched_at = 0),
            Change::Participants(jid, ParticipantAction::Remove, users)
                if own_user.is_some_and(|own| users.iter().any(|u| u == own)) =>
            {
                self.groups.remove(&jid).map(|_| jid)
            }
            Change::Participants(jid, action, users) => {
                self.patch(jid, |g| apply_participants(g, action, &users))
            }
        }
    }

    fn patch(&mut self, jid: String, edit: impl FnOnce(&mut CachedGroup)) -> Option<String> {
        let group = self.groups.get_mut(&jid)?;
        edit(Arc::make_mut(group));
        Some(jid)
    }

    /// What a group notification asks of the cache.
    pub fn effect_of(
        &self,
        notification: &GroupNotification,
        own_user: Option<&str>,
    ) -> NotificationEffect {
        let jid = notification.group.clone();
        let known = self.contains(&jid);
        let change = match &notification.change {
            GroupChange::Added(users) => {
                let includes_me = own_user.is_some_and(|o| users.iter().any(|u| u == o));
                if includes_me || !known {
                    return NotificationEffect::Refetch(jid);
                }
                Change::Participants(jid, ParticipantAction::Add, users.clone())
            }
            GroupChange::Removed(users) => {
                Change::Participants(jid, ParticipantAction::Remove, users.clone())
            }
            GroupChange::Promoted(users) => {
                Change::Participants(jid, ParticipantAction::Promote, users.clone())
            }
            GroupChange::Demoted(users) => {
                Change::Participants(jid, ParticipantAction::Demote, users.clone())
            }
            GroupChange::Subject(subject) => Change::Subject(jid, subject.clone()),
            GroupChange::Description { id, text } => Change::Description {
                jid,
                id: id.clone(),
                text: text.clone(),
            },
            GroupChange::Announce(on) => Change::Settings(
                jid,
                GroupSettingsChange {
                    announce: Some(*on),
                    ..Default::default()
                },
            ),
            GroupChange::Locked(on) => Change::Settings(
                jid,
                GroupSettingsChange {
                    locked: Some(*on),
                    ..Default::default()
                },
            ),
            GroupChange::JoinRequests { .. } => return NotificationEffect::Nothing,
            GroupChange::Created { .. } => return NotificationEffect::Refetch(jid),
            GroupChange::Other if known => Change::Stale(jid),
            GroupChange::Other => return NotificationEffect::Refetch(jid),
        };
        NotificationEffect::Patch(Box::new(change))
    }
}

fn apply_participants(group: &mut CachedGroup, action: ParticipantAction, users: &[String]) {
    for user in users {
        match action {
            ParticipantAction::Add => {
                if group.role_of(user).is_none() {
                    group
                        .participants
                        .push(CachedParticipant::new(user.clone(), "member"));
                }
            }
            ParticipantAction::Remove => group.participants.retain(|p| &p.jid != user),
            ParticipantAction::Promote | ParticipantAction::Demote => {
                if let Some(p) = group.participants.iter_mut().find(|p| &p.jid == user) {
                    // A superadmin stays one; demoting anyone leaves a member.
                    if action == ParticipantAction::Demote {
                        p.role = "member".into();
                    } else if p.role == "member" {
                        p.role = "admin".into();
                    }
                }
            }
        }
    }
}

/// Whether this account may send to the group: it must be a member, and an admin when only
/// admins may send.
pub fn may_send(group: &CachedGroup, own_user: Option<&str>) -> Result<(), GatewayError> {
    match own_user.and_then(|own| group.role_of(own)) {
        None => Err(GatewayError::GroupNotFound),
        Some("member") if group.announce => Err(GatewayError::NotGroupAdmin(
            "only admins can send messages to this group".into(),
        )),
        Some(_) => Ok(()),
    }
}

/// Whether a cached invite link may still be handed out: only while the groups cache shows
/// this account an admin of the group, as WhatsApp requires to read the link. After a leave,
/// a removal or a demotion, WhatsApp is asked again and answers for itself.
pub fn may_share_link(group: Option<&CachedGroup>, own_user: Option<&str>) -> bool {
    matches!(
        group
            .zip(own_user)
            .and_then(|(group, own)| group.role_of(own)),
        Some("admin" | "superadmin")
    )
}

/// One participant's answer from WhatsApp: the JID it named and its error code, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantAnswer {
    pub jid: String,
    pub error: Option<String>,
    /// WhatsApp offered an invite request instead of adding (privacy settings).
    pub invite_offered: bool,
}

/// The contract's per-participant status for one answer.
pub fn participant_status(action: ParticipantAction, answer: &ParticipantAnswer) -> String {
    use ParticipantAction as A;
    match (action, answer.error.as_deref().unwrap_or("")) {
        (A::Add, "") => "Added".into(),
        (A::Remove, "") => "Removed".into(),
        (A::Promote, "") => "Promoted".into(),
        (A::Demote, "") => "Demoted".into(),
        (A::Add, "409") => "AlreadyInGroup".into(),
        (A::Add, "403") if answer.invite_offered => "InviteRequired".into(),
        (_, "403") => "Forbidden".into(),
        (A::Add, "404") => "NotOnWhatsApp".into(),
        (_, "404") => "NotInGroup".into(),
        (A::Add, "408") => "RecentlyLeft".into(),
        (_, "406") => "NotAllowed".into(),
        (_, code) => format!("Failed:{code}"),
    }
}

/// Matches WhatsApp's answers to what was asked (by JID, else by position): the per-asked
/// results in the asked order, and the users the change applied to.
pub fn participant_results(
    action: ParticipantAction,
    asked: &[UserJid],
    answers: &[ParticipantAnswer],
) -> (Vec<ParticipantResult>, Vec<String>) {
    let mut applied = Vec::new();
    let results = asked
        .iter()
        .enumerate()
        .map(|(i, user)| {
            // WhatsApp may answer with another form of the JID (a LID): then the answer in
            // the same position counts, unless it names someone else who was asked.
            let answer = answers.iter().find(|a| a.jid == user.as_str()).or_else(|| {
                answers
                    .get(i)
                    .filter(|a| !asked.iter().any(|u| u.as_str() == a.jid))
            });
            if answer.is_some_and(|a| a.error.is_none()) {
                applied.push(user.as_str().to_owned());
            }
            ParticipantResult {
                jid: user.as_str().to_owned(),
                status: answer
                    .map(|a| participant_status(action, a))
                    .unwrap_or_else(|| "Failed:unanswered".into()),
            }
        })
        .collect();
    (results, applied)
}

/// Promote and demote succeed only for every participant. When WhatsApp refused some, the
/// error names each with its reason: `not_group_admin` when any refusal was for want of
/// rights, else `validation` (the participants named were wrong, e.g. not in the group).
pub fn refused_admin_changes(results: &[ParticipantResult]) -> Option<GatewayError> {
    let refused: Vec<&ParticipantResult> = results
        .iter()
        .filter(|r| !matches!(r.status.as_str(), "Promoted" | "Demoted"))
        .collect();
    if refused.is_empty() {
        return None;
    }
    let named: Vec<String> = refused
        .iter()
        .map(|r| format!("{} ({})", r.jid, r.status))
        .collect();
    let message = format!("WhatsApp refused: {}", named.join(", "));
    Some(if refused.iter().any(|r| r.status == "Forbidden") {
        GatewayError::NotGroupAdmin(message)
    } else {
        GatewayError::validation("participants", message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "620000000001@s.whatsapp.net";
    const B: &str = "620000000002@s.whatsapp.net";
    const C: &str = "620000000003@s.whatsapp.net";
    const G: &str = "120363000000000001@g.us";

    fn group() -> CachedGroup {
        CachedGroup {
            jid: G.into(),
            name: "Team".into(),
            topic: None,
            topic_id: None,
            owner: Some(ME.into()),
            created_at: 1,
            participants: vec![
                CachedParticipant::new(ME.into(), "superadmin"),
                CachedParticipant::new(B.into(), "member"),
            ],
            announce: false,
            locked: false,
            fetched_at: 100,
            addressing_mode: "pn".into(),
            member_add_mode: None,
            member_link_mode: None,
            membership_approval: false,
        }
    }

    fn note(change: GroupChange) -> GroupNotification {
        GroupNotification {
            group: G.into(),
            source: None,
            author: Some(ME.into()),
            timestamp: 1,
            change,
        }
    }

    fn cache() -> GroupCache {
        GroupCache::new(100, [group()])
    }

    #[test]
    fn notifications_patch_known_groups() {
        let mut cache = cache();
        for change in [
            GroupChange::Added(vec![C.into()]),
            GroupChange::Promoted(vec![C.into()]),
            GroupChange::Subject("New".into()),
            GroupChange::Description {
                id: "d1".into(),
                text: Some("about".into()),
            },
            GroupChange::Announce(true),
            GroupChange::Locked(true),
            GroupChange::Removed(vec![B.into()]),
        ] {
            let NotificationEffect::Patch(change) = cache.effect_of(&note(change), Some(ME)) else {
                panic!("expected a patch");
            };
            assert_eq!(cache.apply(*change, Some(ME)).as_deref(), Some(G));
        }
        let g = cache.get(G).unwrap();
        assert_eq!(g.name, "New");
        assert_eq!(g.topic.as_deref(), Some("about"));
        assert_eq!(g.topic_id.as_deref(), Some("d1"));
        assert!(g.announce && g.locked);
        assert_eq!(g.role_of(C), Some("admin"));
        assert_eq!(g.role_of(B), None);
        assert_eq!(g.role_of(ME), Some("superadmin"));
    }

    #[test]
    fn being_added_or_an_unknown_group_is_refetched() {
        let cache = cache();
        assert_eq!(
            cache.effect_of(&note(GroupChange::Added(vec![ME.into()])), Some(ME)),
            NotificationEffect::Refetch(G.into())
        );
        let empty = GroupCache::default();
        assert_eq!(
            empty.effect_of(&note(GroupChange::Added(vec![B.into()])), Some(ME)),
            NotificationEffect::Refetch(G.into())
        );
        assert_eq!(
            empty.effect_of(&note(GroupChange::Other), Some(ME)),
            NotificationEffect::Refetch(G.into())
        );
    }

    #[test]
    fn being_removed_drops_the_group() {
        let mut cache = cache();
        let NotificationEffect::Patch(change) =
            cache.effect_of(&note(GroupChange::Removed(vec![ME.into()])), Some(ME))
        else {
            panic!("expected a patch");
        };
        cache.apply(*change, Some(ME));
        assert!(!cache.contains(G));
    }

    #[test]
    fn other_changes_mark_the_group_stale() {
        let mut cache = cache();
        let NotificationEffect::Patch(change) = cache.effect_of(&note(GroupChange::Other), None)
        else {
            panic!("expected a patch");
        };
        cache.apply(*change, None);
        assert!(cache.snapshot().fresh_group(G, 100, 300).is_none());
    }

    #[test]
    fn deleting_the_description_clears_its_id() {
        let mut cache = cache();
        cache.apply(
            Change::Description {
                jid: G.into(),
                id: "d1".into(),
                text: None,
            },
            None,
        );
        assert_eq!(cache.get(G).unwrap().topic_id, None);
    }

    #[test]
    fn snapshots_do_not_see_later_changes() {
        let mut cache = cache();
        let before = cache.snapshot();
        cache.apply(Change::Subject(G.into(), "Later".into()), None);
        assert_eq!(before.groups[G].name, "Team");
        assert_eq!(cache.get(G).unwrap().name, "Later");
    }

    #[test]
    fn freshness_follows_the_refresh_interval() {
        let snap = cache().snapshot();
        assert!(snap.fresh_group(G, 399, 300).is_some());
        assert!(snap.fresh_group(G, 400, 300).is_none());
        assert!(snap.fresh_list(150, 300).is_some());
        assert!(
            GroupCache::default()
                .snapshot()
                .fresh_list(1, 300)
                .is_none()
        );
    }

    #[test]
    fn a_new_list_replaces_the_cache_and_names_what_is_gone() {
        let mut cache = cache();
        let mut other = group();
        other.jid = "120363000000000002@g.us".into();
        let gone = cache.replace_all(vec![other], 500);
        assert_eq!(gone, vec![G.to_owned()]);
        assert_eq!(cache.list_fetched_at, 500);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn only_members_send_and_only_admins_in_announce_groups() {
        let mut g = group();
        assert!(may_send(&g, Some(B)).is_ok());
        assert!(matches!(
            may_send(&g, Some(C)),
            Err(GatewayError::GroupNotFound)
        ));
        assert!(matches!(
            may_send(&g, None),
            Err(GatewayError::GroupNotFound)
        ));
        g.announce = true;
        assert!(matches!(
            may_send(&g, Some(B)),
            Err(GatewayError::NotGroupAdmin(_))
        ));
        assert!(may_send(&g, Some(ME)).is_ok());
    }

    #[test]
    fn a_cached_invite_link_is_shared_only_with_an_admin_of_a_known_group() {
        let g = group();
        assert!(may_share_link(Some(&g), Some(ME)));
        assert!(!may_share_link(Some(&g), Some(B)), "a member");
        assert!(!may_share_link(Some(&g), Some(C)), "not in the group");
        assert!(!may_share_link(None, Some(ME)), "a group the cache lost");
        assert!(!may_share_link(Some(&g), None), "no identity yet");
    }

    #[test]
    fn participant_answers_match_by_jid_then_position() {
        let asked = [UserJid::parse(B).unwrap(), UserJid::parse(C).unwrap()];
        let answers = [
            ParticipantAnswer {
                jid: "1234@lid".into(),
                error: None,
                invite_offered: false,
            },
            ParticipantAnswer {
                jid: C.into(),
                error: Some("409".into()),
                invite_offered: false,
            },
        ];
        let (results, applied) = participant_results(ParticipantAction::Add, &asked, &answers);
        assert_eq!(results[0].status, "Added");
        assert_eq!(results[1].status, "AlreadyInGroup");
        assert_eq!(applied, vec![B.to_owned()]);
        let swapped = [answers[1].clone(), answers[0].clone()];
        let (results, _) = participant_results(ParticipantAction::Add, &asked, &swapped);
        assert_eq!(results[0].status, "Failed:unanswered");
        assert_eq!(results[1].status, "AlreadyInGroup");
        let (results, applied) = participant_results(ParticipantAction::Remove, &asked, &[]);
        assert!(applied.is_empty());
        assert!(results.iter().all(|r| r.status == "Failed:unanswered"));
    }

    #[test]
    fn admin_changes_name_every_refusal() {
        let result = |jid: &str, status: &str| ParticipantResult {
            jid: jid.into(),
            status: status.into(),
        };
        assert!(refused_admin_changes(&[result(B, "Promoted"), result(C, "Demoted")]).is_none());
        let wrong = refused_admin_changes(&[result(B, "Promoted"), result(C, "NotInGroup")]);
        assert!(
            matches!(&wrong, Some(e @ GatewayError::Validation { .. })
                if e.to_string().contains("620000000003@s.whatsapp.net (NotInGroup)")),
            "{wrong:?}"
        );
        let rights = refused_admin_changes(&[result(B, "Forbidden"), result(C, "NotInGroup")]);
        assert!(
            matches!(&rights, Some(GatewayError::NotGroupAdmin(m)) if m.contains("(Forbidden)")),
            "{rights:?}"
        );
    }

    #[test]
    fn participant_statuses_follow_the_action() {
        let answer = |error: &str, invite_offered| ParticipantAnswer {
            jid: B.into(),
            error: Some(error.into()),
            invite_offered,
        };
        use ParticipantAction as A;
        assert_eq!(
            participant_status(A::Add, &answer("403", true)),
            "InviteRequired"
        );
        assert_eq!(
            participant_status(A::Add, &answer("403", false)),
            "Forbidden"
        );
        assert_eq!(
            participant_status(A::Add, &answer("404", false)),
            "NotOnWhatsApp"
        );
        assert_eq!(
            participant_status(A::Remove, &answer("404", false)),
            "NotInGroup"
        );
        assert_eq!(
            participant_status(A::Promote, &answer("500", false)),
            "Failed:500"
        );
    }

    #[test]
    fn a_snapshot_renders_each_reply_once_and_the_next_snapshot_shows_the_change() {
        let mut cache = cache();
        let before = cache.snapshot();
        let info = before.fresh_info(G, 100, 60).unwrap().unwrap();
        let again = before.fresh_info(G, 100, 60).unwrap().unwrap();
        assert_eq!(info.json().as_ptr(), again.json().as_ptr(), "rendered once");
        let json: serde_json::Value = serde_json::from_slice(&info.json()).unwrap();
        assert_eq!(json, serde_json::to_value(group().info()).unwrap());
        let view: serde_json::Value =
            serde_json::from_slice(&before.fresh_view(G, 100, 60).unwrap().unwrap().json())
                .unwrap();
        assert_eq!(view, serde_json::to_value(group().view()).unwrap());
        // Stale or unknown groups have no cached reply.
        assert!(before.fresh_info(G, 1000, 60).is_none());
        assert!(
            before
                .fresh_view("120363000000000009@g.us", 100, 60)
                .is_none()
        );

        cache.apply(Change::Subject(G.into(), "Renamed".into()), Some(ME));
        let after = cache.snapshot();
        let json: serde_json::Value =
            serde_json::from_slice(&after.fresh_info(G, 100, 60).unwrap().unwrap().json()).unwrap();
        assert_eq!(json["name"], "Renamed");
        let old: serde_json::Value =
            serde_json::from_slice(&before.fresh_info(G, 100, 60).unwrap().unwrap().json())
                .unwrap();
        assert_eq!(old["name"], "Team", "a published snapshot never changes");
    }
}
