//! Join requests: a phone asks to join a group, the admins hear about it
//! (`created_membership_requests`), the requester withdraws (`revoked_membership_requests`),
//! and the admin client lists, approves and rejects requests over its own IQs.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::iq::groups::{
    GroupCreateOptions, GroupParticipantOptions, GroupSubject,
};
use whatsapp_rust::wacore::stanza::groups::{GroupNotificationAction, MembershipRequestMethod};

const SAM: &str = "6289900000501";
const RINA: &str = "6289900000502";

fn created_for(e: &Event, phone: &str) -> bool {
    matches!(e, Event::GroupUpdate(u) if matches!(&u.action,
        GroupNotificationAction::CreatedMembershipRequests { requests, request_method, .. }
            if *request_method == MembershipRequestMethod::InviteLink
                && requests.iter().any(|r| r.jid.user == phone)))
}

fn revoked_for(e: &Event, phone: &str) -> bool {
    matches!(e, Event::GroupUpdate(u) if matches!(&u.action,
        GroupNotificationAction::RevokedMembershipRequests { participants }
            if participants.iter().any(|p| p.user == phone)))
}

async fn pending(sim: &wa_sim::SimHandle, gid: &str) -> Vec<String> {
    let (status, group) = get(sim, &format!("/groups/{gid}")).await;
    assert_eq!(status, 200, "{group}");
    group["join_requests"]
        .as_array()
        .unwrap_or_else(|| panic!("join_requests in {group}"))
        .iter()
        .map(|r| r["phone_number"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn join_requests_reach_the_admins() {
    let sim = start_sim().await;
    for phone in [SAM, RINA] {
        let (status, _) = post(&sim, "/accounts", json!({ "phone_number": phone })).await;
        assert_eq!(status, 201);
    }
    let (alice, alice_phone) = pair_by_qr(&sim, Some("alice"), None).await;
    let (bob, bob_phone) = pair_by_qr(&sim, Some("bob"), None).await;
    let a = alice.handle.client();
    let b = bob.handle.client();
    let created = a
        .groups()
        .create_group(
            GroupCreateOptions::builder()
                .subject("Club")
                .participants(vec![GroupParticipantOptions::new(pn_jid(&bob_phone))])
                .build(),
        )
        .await
        .unwrap();
    let gid = created.metadata.id.clone();
    let gid_s = gid.to_string();
    let requests = format!("/groups/{gid_s}/join-requests");

    // Sam asks; the admin is told, the plain member is not.
    let (status, reply) = post(&sim, &requests, json!({ "phone_number": SAM })).await;
    assert_eq!((status, &reply), (200, &json!({"success": true})));
    wait_event(
        &alice.events,
        Duration::from_secs(10),
        "join request",
        |e| created_for(e, SAM),
    )
    .await;
    assert_eq!(pending(&sim, &gid_s).await, vec![SAM.to_string()]);
    let listed = a
        .groups()
        .get_membership_requests(gid.clone())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].jid.user, SAM);
    assert!(listed[0].request_time.is_some());
    a.groups()
        .set_subject(gid.clone(), GroupSubject::new("Club 2").unwrap())
        .await
        .unwrap();
    wait_event(&bob.events, Duration::from_secs(10), "subject change", |e| {
        assert!(!created_for(e, SAM), "a non-admin was told of a join request");
        matches!(e, Event::GroupUpdate(u) if matches!(&u.action, GroupNotificationAction::Subject { .. }))
    })
    .await;
    let denied = b.groups().get_membership_requests(gid.clone()).await;
    assert!(denied.is_err(), "{denied:?}");

    // Asking twice changes nothing; members, strangers and unknown groups are refused.
    let (status, _) = post(&sim, &requests, json!({ "phone_number": SAM })).await;
    assert_eq!(status, 200);
    assert_eq!(pending(&sim, &gid_s).await, vec![SAM.to_string()]);
    let (status, _) = post(&sim, &requests, json!({ "phone_number": bob_phone })).await;
    assert_eq!(status, 409);
    let (status, _) = post(&sim, &requests, json!({ "phone_number": "6289900000599" })).await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &sim,
        "/groups/120363999999999999@g.us/join-requests",
        json!({ "phone_number": SAM }),
    )
    .await;
    assert_eq!(status, 404);

    // Sam withdraws.
    let (status, _) = http(&sim, "DELETE", &format!("{requests}/{SAM}"), None).await;
    assert_eq!(status, 200);
    wait_event(
        &alice.events,
        Duration::from_secs(10),
        "revoked request",
        |e| revoked_for(e, SAM),
    )
    .await;
    assert!(pending(&sim, &gid_s).await.is_empty());
    let (status, _) = http(&sim, "DELETE", &format!("{requests}/{SAM}"), None).await;
    assert_eq!(status, 404);

    // The admin approves Rina and rejects Sam over its own IQs.
    for phone in [RINA, SAM] {
        let (status, _) = post(&sim, &requests, json!({ "phone_number": phone })).await;
        assert_eq!(status, 200);
        wait_event(
            &alice.events,
            Duration::from_secs(10),
            "join request",
            |e| created_for(e, phone),
        )
        .await;
    }
    let approved = a
        .groups()
        .approve_membership_requests(gid.clone(), &[pn_jid(RINA)])
        .await
        .unwrap();
    assert!(approved.iter().all(|r| r.is_ok()), "{approved:?}");
    wait_event(&bob.events, Duration::from_secs(10), "Rina added", |e| {
        matches!(e, Event::GroupUpdate(u) if matches!(&u.action,
            GroupNotificationAction::Add { participants, .. } if participants.iter().any(|p| p.jid.user == RINA)))
    })
    .await;
    assert_eq!(pending(&sim, &gid_s).await, vec![SAM.to_string()]);
    let rejected = a
        .groups()
        .reject_membership_requests(gid.clone(), &[pn_jid(SAM), pn_jid("6289900000598")])
        .await
        .unwrap();
    assert_eq!(
        rejected.iter().map(|r| r.is_ok()).collect::<Vec<_>>(),
        vec![true, false],
        "{rejected:?}"
    );
    assert!(pending(&sim, &gid_s).await.is_empty());
    let (_, group) = get(&sim, &format!("/groups/{gid_s}")).await;
    let members: Vec<&str> = group["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["phone_number"].as_str())
        .collect();
    assert!(members.contains(&RINA), "{group}");
    assert!(!members.contains(&SAM), "{group}");
    assert!(members.contains(&alice_phone.as_str()), "{group}");

    alice.handle.shutdown().await;
    bob.handle.shutdown().await;
    sim.shutdown().await;
}
