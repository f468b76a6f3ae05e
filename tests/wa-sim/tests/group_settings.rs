//! Group settings round trips through a real client: `member_add_mode` and
//! `membership_approval_mode` over `w:g2`, `member_link_mode` over MEX (`w:mex`), each read
//! back with a group query (from `GroupMetadata` where whatsapp-rust 0.7 parses the field,
//! from the raw answer where it cannot) and in the sim's snapshot; non-admins are refused;
//! unknown MEX queries are answered with an error; and LID-addressed groups name their
//! participants by LID with the phone number beside it.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::iq::groups::{
    GroupCreateOptions, GroupParticipantOptions, GroupQueryIq,
};
use whatsapp_rust::wacore::iq::spec::IqSpec as _;
use whatsapp_rust::wacore::types::message::AddressingMode;
use whatsapp_rust::{
    GroupError, MemberAddMode, MemberLinkMode, MembershipApprovalMode, MexError, MexRequest,
};

async fn snapshot(sim: &wa_sim::SimHandle, gid: &str) -> serde_json::Value {
    let (status, group) = get(sim, &format!("/groups/{gid}")).await;
    assert_eq!(status, 200, "{group}");
    group
}

/// The text of `tag` in the sim's raw `<group>` answer to a group query, as the client
/// received it (before whatsapp-rust's own parsing).
async fn raw_setting(
    client: &whatsapp_rust::Client,
    gid: &whatsapp_rust::Jid,
    tag: &str,
) -> Option<String> {
    let answer = client
        .send_iq(GroupQueryIq::new(gid).build_iq())
        .await
        .expect("group query answered");
    let answer = answer.get();
    let group = answer.get_optional_child("group").expect("a <group>");
    group
        .get_optional_child(tag)
        .and_then(|n| n.content_as_string())
        .map(|s| s.to_string())
}

/// `state` of `<membership_approval_mode><group_join>` in the raw answer.
async fn raw_group_join_state(
    client: &whatsapp_rust::Client,
    gid: &whatsapp_rust::Jid,
) -> Option<String> {
    let answer = client
        .send_iq(GroupQueryIq::new(gid).build_iq())
        .await
        .expect("group query answered");
    let answer = answer.get();
    let group = answer.get_optional_child("group")?;
    let join = group
        .get_optional_child("membership_approval_mode")?
        .get_optional_child("group_join")?;
    join.attrs().optional_string("state").map(|s| s.to_string())
}

fn is_link_mode_notification(e: &Event, gid: &str, mode: &str) -> bool {
    let Event::MexNotification(n) = e else {
        return false;
    };
    let change = &n.payload["data"]["xwa2_notify_group_on_prop_change"];
    n.op_name == "NotificationGroupMemberLinkPropertyUpdate"
        && n.from.as_ref().map(ToString::to_string).as_deref() == Some(gid)
        && change["id"] == gid
        && change["properties"]["member_link_mode"] == mode
}

/// Alice (admin) and Bob (member) in a fresh group; returns the group JID.
async fn team(a: &whatsapp_rust::Client, bob_phone: &str) -> whatsapp_rust::Jid {
    a.groups()
        .create_group(
            GroupCreateOptions::builder()
                .subject("Settings")
                .participants(vec![GroupParticipantOptions::new(pn_jid(bob_phone))])
                .build(),
        )
        .await
        .expect("group created")
        .metadata
        .id
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_round_trip_through_group_queries() {
    let sim = start_sim().await;
    let (alice, _) = pair_by_qr(&sim, Some("alice"), None).await;
    let (bob, bob_phone) = pair_by_qr(&sim, Some("bob"), None).await;
    let a = alice.handle.client();
    let b = bob.handle.client();
    let gid = team(&a, &bob_phone).await;
    let gid_s = gid.to_string();

    // Defaults, as WhatsApp creates groups. The two modes travel as raw bytes (their
    // values are not in the binary dictionary, so no server can send them as tokens), and
    // whatsapp-rust 0.7 parses them only from string content: they arrive (checked on the
    // raw answer) but `GroupMetadata` leaves them `None`.
    let meta = b.groups().get_metadata(&gid).await.expect("metadata");
    assert_eq!(
        meta.member_add_mode, None,
        "whatsapp-rust learned to read it?"
    );
    assert_eq!(
        meta.member_link_mode, None,
        "whatsapp-rust learned to read it?"
    );
    assert!(!meta.membership_approval);
    assert_eq!(
        raw_setting(&b, &gid, "member_add_mode").await.as_deref(),
        Some("all_member_add")
    );
    assert_eq!(
        raw_setting(&b, &gid, "member_link_mode").await.as_deref(),
        Some("admin_link")
    );
    let group = snapshot(&sim, &gid_s).await;
    assert_eq!(group["member_link_mode"], "admin_link", "{group}");
    assert_eq!(group["addressing_mode"], "pn", "{group}");

    // Every setting changed, then read back by both members and in the snapshot.
    a.groups()
        .set_member_add_mode(gid.clone(), MemberAddMode::AdminAdd)
        .await
        .expect("member_add_mode set");
    a.groups()
        .set_membership_approval(gid.clone(), MembershipApprovalMode::On)
        .await
        .expect("membership approval set");
    a.groups()
        .set_member_link_mode(&gid, MemberLinkMode::AllMemberLink)
        .await
        .expect("member_link_mode set over mex");
    wait_event(
        &bob.events,
        Duration::from_secs(10),
        "member_link_mode mex notification",
        |e| is_link_mode_notification(e, &gid_s, "ALL_MEMBER_LINK"),
    )
    .await;
    for client in [&a, &b] {
        let meta = client.groups().get_metadata(&gid).await.expect("metadata");
        assert!(meta.membership_approval);
        assert_eq!(
            raw_setting(client, &gid, "member_add_mode")
                .await
                .as_deref(),
            Some("admin_add")
        );
        assert_eq!(
            raw_setting(client, &gid, "member_link_mode")
                .await
                .as_deref(),
            Some("all_member_link")
        );
        let state = raw_group_join_state(client, &gid).await;
        assert_eq!(state.as_deref(), Some("on"));
    }
    let group = snapshot(&sim, &gid_s).await;
    assert_eq!(group["member_add_mode"], "admin_add", "{group}");
    assert_eq!(group["member_link_mode"], "all_member_link", "{group}");
    assert_eq!(group["membership_approval"], true, "{group}");

    // The link mode means what it says: a plain member may now fetch the invite link.
    b.groups()
        .get_invite_link(gid.clone(), false)
        .await
        .expect("members may share the link under all_member_link");

    // And back.
    a.groups()
        .set_member_add_mode(gid.clone(), MemberAddMode::AllMemberAdd)
        .await
        .expect("member_add_mode reset");
    a.groups()
        .set_membership_approval(gid.clone(), MembershipApprovalMode::Off)
        .await
        .expect("membership approval off");
    a.groups()
        .set_member_link_mode(&gid, MemberLinkMode::AdminLink)
        .await
        .expect("member_link_mode reset");
    let meta = b.groups().get_metadata(&gid).await.expect("metadata");
    assert!(!meta.membership_approval);
    assert_eq!(
        raw_setting(&b, &gid, "member_add_mode").await.as_deref(),
        Some("all_member_add")
    );
    assert_eq!(
        raw_setting(&b, &gid, "member_link_mode").await.as_deref(),
        Some("admin_link")
    );
    let group = snapshot(&sim, &gid_s).await;
    assert_eq!(group["member_link_mode"], "admin_link", "{group}");
    assert_eq!(group["membership_approval"], false, "{group}");
    let refused = b.groups().get_invite_link(gid.clone(), false).await;
    assert!(refused.is_err(), "{refused:?}");

    let stats = stats(&sim).await;
    assert_eq!(stats["unknown_iqs"], 0, "{stats}");
    assert!(stats["iqs"]["w:mex/query"].as_u64() >= Some(2), "{stats}");
    for client in [alice, bob] {
        client.handle.shutdown().await;
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn non_admins_cannot_change_member_link_mode_and_unknown_mex_queries_fail() {
    let sim = start_sim().await;
    let (alice, _) = pair_by_qr(&sim, Some("alice"), None).await;
    let (bob, bob_phone) = pair_by_qr(&sim, Some("bob"), None).await;
    let a = alice.handle.client();
    let b = bob.handle.client();
    let gid = team(&a, &bob_phone).await;

    let refused = b
        .groups()
        .set_member_link_mode(&gid, MemberLinkMode::AllMemberLink)
        .await;
    // The client turns the GraphQL error into a parse error that carries its code.
    assert!(
        matches!(
            &refused,
            Err(GroupError::Mex(MexError::Request(
                whatsapp_rust::request::IqError::ParseError(_)
            )))
        ),
        "{refused:?}"
    );
    assert!(format!("{refused:?}").contains("code=403"), "{refused:?}");
    let group = snapshot(&sim, &gid.to_string()).await;
    assert_eq!(group["member_link_mode"], "admin_link", "{group}");
    assert_eq!(
        raw_setting(&a, &gid, "member_link_mode").await.as_deref(),
        Some("admin_link")
    );

    // A group the sim does not know is a 404, still answered.
    let missing = a
        .groups()
        .set_member_link_mode(
            &"120363999999999999@g.us".parse().expect("jid"),
            MemberLinkMode::AllMemberLink,
        )
        .await;
    assert!(format!("{missing:?}").contains("code=404"), "{missing:?}");

    // A persisted query the sim does not know gets an error answer, not silence.
    let unknown = a
        .mex()
        .query(MexRequest::new(
            "WaSimNoSuchQuery",
            "1234",
            json!({ "x": 1 }),
        ))
        .await;
    assert!(format!("{unknown:?}").contains("code=400"), "{unknown:?}");
    let stats = stats(&sim).await;
    assert_eq!(stats["unknown_iqs"], 1, "{stats}");

    for client in [alice, bob] {
        client.handle.shutdown().await;
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lid_addressed_groups_give_participants_phone_numbers() {
    let sim = start_sim().await;
    let (alice, alice_phone) = pair_by_qr(&sim, Some("alice"), None).await;
    let (bob, bob_phone) = pair_by_qr(&sim, Some("bob"), None).await;
    let a = alice.handle.client();
    let b = bob.handle.client();
    let gid = team(&a, &bob_phone).await;
    let gid_s = gid.to_string();
    let lid_of = |phone: String| {
        let sim = &sim;
        async move {
            let (status, account) = get(sim, &format!("/accounts/{phone}")).await;
            assert_eq!(status, 200, "{account}");
            account["lid"].as_str().expect("lid").to_string()
        }
    };
    // `GET /accounts/{phone}` gives the LID as a JID (`…@lid`); compare on the user part.
    let alice_lid = lid_of(alice_phone.clone()).await.replace("@lid", "");
    let bob_lid = lid_of(bob_phone.clone()).await.replace("@lid", "");

    // PN by default: participants are their phone numbers.
    let meta = b.groups().get_metadata(&gid).await.expect("metadata");
    assert_eq!(meta.addressing_mode, AddressingMode::Pn);
    assert!(meta.participants.iter().all(|p| p.jid.is_pn()), "{meta:?}");

    let path = format!("/groups/{gid_s}/addressing");
    let (status, reply) = post(&sim, &path, json!({ "mode": "lid" })).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["addressing_mode"], "lid");
    let group = snapshot(&sim, &gid_s).await;
    assert_eq!(group["addressing_mode"], "lid", "{group}");

    let meta = b.groups().get_metadata(&gid).await.expect("metadata");
    assert_eq!(meta.addressing_mode, AddressingMode::Lid);
    assert_eq!(meta.participants.len(), 2);
    for (phone, lid) in [(&alice_phone, &alice_lid), (&bob_phone, &bob_lid)] {
        let p = meta
            .participants
            .iter()
            .find(|p| p.jid.user == *lid)
            .unwrap_or_else(|| panic!("participant {lid}@lid in {meta:?}"));
        assert!(p.jid.is_lid(), "{p:?}");
        assert_eq!(p.phone_number, Some(pn_jid(phone)), "{p:?}");
    }
    let creator = meta.creator.as_ref().expect("creator");
    assert!(creator.is_lid() && creator.user == alice_lid, "{creator}");
    assert_eq!(meta.creator_pn, Some(pn_jid(&alice_phone)));
    assert_eq!(meta.subject_owner_pn, Some(pn_jid(&alice_phone)));
    let admin = meta
        .participants
        .iter()
        .find(|p| p.jid.user == alice_lid)
        .expect("alice");
    assert!(admin.is_super_admin(), "{admin:?}");

    // Back to PN.
    let (status, _) = post(&sim, &path, json!({ "mode": "pn" })).await;
    assert_eq!(status, 200);
    let meta = b.groups().get_metadata(&gid).await.expect("metadata");
    assert_eq!(meta.addressing_mode, AddressingMode::Pn);
    assert!(
        meta.participants
            .iter()
            .all(|p| p.jid.is_pn() && p.phone_number.is_none()),
        "{meta:?}"
    );

    // Bad input.
    let (status, reply) = post(&sim, &path, json!({ "mode": "username" })).await;
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = post(
        &sim,
        "/groups/120363999999999999@g.us/addressing",
        json!({ "mode": "lid" }),
    )
    .await;
    assert_eq!(status, 404, "{reply}");

    for client in [alice, bob] {
        client.handle.shutdown().await;
    }
    sim.shutdown().await;
}
