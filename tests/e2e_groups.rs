//! Groups, invites and messages end to end: the real binary, its real WhatsApp client and
//! `wa-sim`. Every write is checked at "WhatsApp" (the simulator's own view), every read
//! against the exact shapes of `groups.md`.

mod common;

use common::sim::Sim;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const PAIRING: Duration = Duration::from_secs(60);

fn user(phone: &str) -> String {
    format!("{phone}@s.whatsapp.net")
}

fn role_of(sim_group: &Value, jid: &str) -> Option<String> {
    sim_group["participants"]
        .as_array()?
        .iter()
        .find(|p| p["jid"] == jid)
        .map(|p| p["role"].as_str().unwrap_or("").to_string())
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

async fn setup() -> (Sim, TestServer) {
    let sim = Sim::start().await;
    let server = TestServer::builder().whatsapp_url(sim.url()).start().await;
    sim.pair_by_qr(&server, "a", "6285500000001", "a").await;
    (sim, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_groups_md_endpoint_works_and_changes_whatsapp() {
    let (sim, server) = setup().await;
    let api = server.api();
    let me = user("6285500000001");
    let b = sim.user("6285500000002").await;
    let c = sim.user("6285500000003").await;
    let d = sim.user("6285500000004").await;

    // Create Group
    let created = api
        .post_json(
            "/sessions/a/groups",
            &json!({"name": "My New Group", "participants": [b, c]}),
        )
        .await
        .expect(200);
    assert_eq!(keys(&created), ["group_jid"]);
    let gid = created["group_jid"].as_str().unwrap().to_string();
    assert!(gid.ends_with("@g.us"), "{gid}");
    let at_wa = sim.group(&gid).await;
    assert_eq!(at_wa["subject"], "My New Group");
    assert_eq!(role_of(&at_wa, &me).as_deref(), Some("superadmin"));
    assert_eq!(role_of(&at_wa, &b).as_deref(), Some("member"));

    // List Groups
    let list = api.get("/sessions/a/groups").await.expect(200);
    assert_eq!(keys(&list), ["groups", "total"]);
    assert_eq!(list["total"], 1);
    assert_eq!(
        list["groups"][0],
        json!({"jid": gid, "name": "My New Group", "participant_count": 3})
    );

    // Get Group
    let group = api
        .get(&format!("/sessions/a/groups/{gid}"))
        .await
        .expect(200);
    // groups.md's fields, plus what waxum's clients read: `subject` and `addressing_mode`.
    assert_eq!(
        keys(&group),
        [
            "addressing_mode",
            "created_at",
            "jid",
            "name",
            "participant_count",
            "subject",
            "topic"
        ]
    );
    assert_eq!(group["subject"], group["name"]);
    assert_eq!(group["addressing_mode"], "pn");
    assert_eq!(group["jid"], gid);
    assert_eq!(group["participant_count"], 3);
    assert_eq!(group["created_at"], at_wa["creation"]);
    assert!(group["topic"].is_string());

    // Get Group Info
    let info = api
        .get(&format!("/sessions/a/groups/{gid}/info"))
        .await
        .expect(200);
    assert_eq!(
        keys(&info),
        [
            "addressing_mode",
            "created_at",
            "jid",
            "name",
            "owner",
            "participants",
            "subject",
            "topic"
        ]
    );
    assert_eq!(info["subject"], info["name"]);
    assert_eq!(info["owner"], me);
    let parts = info["participants"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    for p in parts {
        assert_eq!(keys(p), ["jid", "phone_number", "role"]);
    }
    assert!(parts.contains(&json!({"jid": me, "role": "superadmin", "phone_number": me})));
    assert!(parts.contains(&json!({"jid": b, "role": "member", "phone_number": b})));

    // Set Group Subject
    let r = api
        .request(
            reqwest::Method::PUT,
            &format!("/sessions/a/groups/{gid}/subject"),
        )
        .json(&json!({"subject": "New Group Name"}));
    assert_eq!(api.send(r).await.expect(200), json!({"success": true}));
    assert_eq!(sim.group(&gid).await["subject"], "New Group Name");
    let group = api
        .get(&format!("/sessions/a/groups/{gid}"))
        .await
        .expect(200);
    assert_eq!(group["name"], "New Group Name");

    // Set Group Description, then a stale prev_id, then delete it.
    let put = |body: Value| {
        api.request(
            reqwest::Method::PUT,
            &format!("/sessions/a/groups/{gid}/description"),
        )
        .json(&body)
    };
    let r = put(json!({"description": "This is the group description", "prev_id": null}));
    assert_eq!(api.send(r).await.expect(200), json!({"success": true}));
    let at_wa = sim.group(&gid).await;
    assert_eq!(at_wa["description"], "This is the group description");
    let info = api
        .get(&format!("/sessions/a/groups/{gid}/info"))
        .await
        .expect(200);
    assert_eq!(info["topic"], "This is the group description");
    let r = put(json!({"description": "stale write", "prev_id": "DEADBEEF"}));
    api.send(r).await.expect_error(409, "description_conflict");
    assert_eq!(
        sim.group(&gid).await["description"],
        "This is the group description"
    );
    let current = at_wa["description_id"].as_str().unwrap().to_string();
    let r = put(json!({"description": null, "prev_id": current}));
    api.send(r).await.expect(200);
    assert_eq!(sim.group(&gid).await["description"], Value::Null);

    // Add Participants: per-JID results, a refusal is reported per JID.
    let added = api
        .post_json(
            &format!("/sessions/a/groups/{gid}/participants"),
            &json!({"participants": [d, b]}),
        )
        .await
        .expect(200);
    assert_eq!(keys(&added), ["results"]);
    let results = added["results"].as_array().unwrap();
    assert!(
        results.contains(&json!({"jid": d, "status": "Added"})),
        "{added}"
    );
    let b_result = results.iter().find(|r| r["jid"] == b).unwrap();
    assert_ne!(
        b_result["status"], "Added",
        "b is already in the group: {added}"
    );
    assert_eq!(
        role_of(&sim.group(&gid).await, &d).as_deref(),
        Some("member")
    );

    // Remove Participants
    let r = api
        .request(
            reqwest::Method::DELETE,
            &format!("/sessions/a/groups/{gid}/participants"),
        )
        .json(&json!({"participants": [c]}));
    let removed = api.send(r).await.expect(200);
    assert_eq!(
        removed,
        json!({"results": [{"jid": c, "status": "Removed"}]})
    );
    assert_eq!(role_of(&sim.group(&gid).await, &c), None);

    // Promote, then Demote
    let promoted = api
        .post_json(
            &format!("/sessions/a/groups/{gid}/admins"),
            &json!({"participants": [b]}),
        )
        .await
        .expect(200);
    assert_eq!(promoted, json!({"success": true}));
    assert_eq!(
        role_of(&sim.group(&gid).await, &b).as_deref(),
        Some("admin")
    );
    let info = api
        .get(&format!("/sessions/a/groups/{gid}/info"))
        .await
        .expect(200);
    assert!(
        info["participants"]
            .as_array()
            .unwrap()
            .contains(&json!({"jid": b, "role": "admin", "phone_number": b}))
    );
    let r = api
        .request(
            reqwest::Method::DELETE,
            &format!("/sessions/a/groups/{gid}/admins"),
        )
        .json(&json!({"participants": [b]}));
    assert_eq!(api.send(r).await.expect(200), json!({"success": true}));
    assert_eq!(
        role_of(&sim.group(&gid).await, &b).as_deref(),
        Some("member")
    );

    // Get Invite Link, and reset it.
    let link = api
        .get(&format!("/sessions/a/groups/{gid}/invite-link"))
        .await
        .expect(200);
    assert_eq!(keys(&link), ["invite_link"]);
    let code = sim.group(&gid).await["invite_code"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        link["invite_link"],
        format!("https://chat.whatsapp.com/{code}")
    );
    let reset = api
        .get(&format!("/sessions/a/groups/{gid}/invite-link?reset=true"))
        .await
        .expect(200);
    let new_code = sim.group(&gid).await["invite_code"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_code, code, "the old link is revoked");
    assert_eq!(
        reset["invite_link"],
        format!("https://chat.whatsapp.com/{new_code}")
    );
    // The admin snapshot shows the link is cached, never the code that lets anyone join.
    let snapshot = server
        .admin()
        .get("/admin/sessions/a/snapshot")
        .await
        .expect(200);
    let cached = &snapshot["invites"][gid.as_str()]["data"];
    assert_eq!(cached["group_jid"], gid.as_str(), "{snapshot}");
    assert!(!snapshot.to_string().contains(&new_code), "{snapshot}");

    // Settings (groups-extra.md)
    let r = api
        .request(
            reqwest::Method::PUT,
            &format!("/sessions/a/groups/{gid}/settings"),
        )
        .json(&json!({"announce": true, "locked": true}));
    assert_eq!(api.send(r).await.expect(200), json!({"success": true}));
    let at_wa = sim.group(&gid).await;
    assert_eq!(at_wa["announce"], true);
    assert_eq!(at_wa["locked"], true);
    let r = api
        .request(
            reqwest::Method::PUT,
            &format!("/sessions/a/groups/{gid}/settings"),
        )
        .json(&json!({}));
    api.send(r).await.expect_error(400, "validation");

    // Leave Group
    let left = api
        .post(&format!("/sessions/a/groups/{gid}/leave"))
        .await
        .expect(200);
    assert_eq!(left, json!({"success": true}));
    assert_eq!(role_of(&sim.group(&gid).await, &me), None);
    api.get(&format!("/sessions/a/groups/{gid}?refresh=true"))
        .await
        .expect_error(404, "group_not_found");
    let list = api.get("/sessions/a/groups?refresh=true").await.expect(200);
    assert_eq!(list["total"], 0);
    // The invite link cached before the leave is not handed out any more: WhatsApp is asked,
    // and refuses a non-member.
    api.get(&format!("/sessions/a/groups/{gid}/invite-link"))
        .await
        .expect_error(403, "not_group_admin");
}

#[tokio::test(flavor = "multi_thread")]
async fn texts_reach_group_members_and_users_decrypted_by_their_own_keys() {
    let (sim, server) = setup().await;
    let api = server.api();
    let b = sim.user("6285500000012").await;
    let c = sim.user("6285500000013").await;
    let gid = api
        .post_json(
            "/sessions/a/groups",
            &json!({"name": "Texts", "participants": [b, c]}),
        )
        .await
        .expect(200)["group_jid"]
        .as_str()
        .unwrap()
        .to_string();

    let sent = api
        .post_json(
            "/sessions/a/messages/text",
            &json!({"to": gid, "text": "Hello group!"}),
        )
        .await
        .expect(200);
    assert_eq!(keys(&sent), ["message_id", "timestamp"]);
    let id = sent["message_id"].as_str().unwrap().to_string();
    for phone in ["6285500000012", "6285500000013"] {
        let got = wait_until(Duration::from_secs(20), || async {
            sim.get_ok(&format!("/accounts/{phone}/messages"))
                .await
                .as_array()
                .is_some_and(|m| {
                    m.iter()
                        .any(|m| m["id"] == id && m["text"] == "Hello group!" && m["chat"] == gid)
                })
        })
        .await;
        assert!(got, "{phone} received and decrypted the group text");
    }

    // To a user, addressed by bare phone number.
    let sent = api
        .post_json(
            "/sessions/a/messages/text",
            &json!({"to": "+62 855-0000-0012", "text": "Hi B"}),
        )
        .await
        .expect(200);
    let id = sent["message_id"].as_str().unwrap().to_string();
    let got = wait_until(Duration::from_secs(20), || async {
        sim.get_ok("/accounts/6285500000012/messages")
            .await
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["id"] == id && m["text"] == "Hi B"))
    })
    .await;
    assert!(got, "the user received and decrypted the text");

    // Bad input never reaches WhatsApp. A reply needs the quoted message in the event log:
    // this one was sent through the API, so the log holds only its ack.
    api.post_json(
        "/sessions/a/messages/text",
        &json!({"to": b, "text": "re", "quoted_id": id}),
    )
    .await
    .expect_error(404, "not_found");
    api.post_json("/sessions/a/messages/text", &json!({"to": gid, "text": ""}))
        .await
        .expect_error(400, "validation");
    api.post_json(
        "/sessions/a/messages/text",
        &json!({"to": "nobody", "text": "x"}),
    )
    .await
    .expect_error(400, "invalid_jid");
    api.post_json(
        "/sessions/a/messages/text",
        &json!({"to": gid, "text": "x".repeat(65_537)}),
    )
    .await
    .expect_error(400, "validation");
    api.post_json(
        "/sessions/a/messages/text",
        &json!({"to": "120363999999999999@g.us", "text": "x"}),
    )
    .await
    .expect_error(404, "group_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sessions_see_each_others_changes_through_notifications() {
    let (sim, server) = setup().await;
    sim.pair_by_qr(&server, "b", "6285500000022", "b").await;
    let api = server.api();
    let gid = api
        .post_json(
            "/sessions/a/groups",
            &json!({"name": "Shared", "participants": [user("6285500000022")]}),
        )
        .await
        .expect(200)["group_jid"]
        .as_str()
        .unwrap()
        .to_string();
    // b learns the group (one query), then only notifications may change what it serves.
    let seen = wait_for(Duration::from_secs(10), || async {
        let r = api.get(&format!("/sessions/b/groups/{gid}/info")).await;
        (r.code() == 200).then(|| r.json())
    })
    .await
    .expect("b sees the group");
    assert_eq!(seen["name"], "Shared");
    let queries_before = sim.stats().await["group_queries"][&gid]
        .as_u64()
        .unwrap_or(0);

    let r = api
        .request(
            reqwest::Method::PUT,
            &format!("/sessions/a/groups/{gid}/subject"),
        )
        .json(&json!({"subject": "Renamed by a"}));
    api.send(r).await.expect(200);
    api.post_json(
        &format!("/sessions/a/groups/{gid}/admins"),
        &json!({"participants": [user("6285500000022")]}),
    )
    .await
    .expect(200);
    let updated = wait_until(Duration::from_secs(10), || async {
        let info = api
            .get(&format!("/sessions/b/groups/{gid}/info"))
            .await
            .json();
        info["name"] == "Renamed by a"
            && info["participants"].as_array().is_some_and(|p| {
                p.contains(&json!({
                    "jid": user("6285500000022"),
                    "role": "admin",
                    "phone_number": user("6285500000022"),
                }))
            })
    })
    .await;
    assert!(updated, "b's reads show a's changes without a refresh");
    let queries_after = sim.stats().await["group_queries"][&gid]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(
        queries_after, queries_before,
        "no query was needed: the notification did it"
    );

    // A member who is not an admin is refused as WhatsApp refuses.
    let r = api
        .request(
            reqwest::Method::PUT,
            &format!("/sessions/a/groups/{gid}/settings"),
        )
        .json(&json!({"locked": true}));
    api.send(r).await.expect(200);
    let r = api
        .request(
            reqwest::Method::DELETE,
            &format!("/sessions/a/groups/{gid}/admins"),
        )
        .json(&json!({"participants": [user("6285500000022")]}));
    api.send(r).await.expect(200);
    let refused = wait_for(Duration::from_secs(10), || async {
        let r = api
            .request(
                reqwest::Method::PUT,
                &format!("/sessions/b/groups/{gid}/subject"),
            )
            .json(&json!({"subject": "b was here"}));
        let r = api.send(r).await;
        (r.code() == 403).then_some(r)
    })
    .await
    .expect("403 for a non-admin");
    refused.expect_error(403, "not_group_admin");
    assert_eq!(sim.group(&gid).await["subject"], "Renamed by a");

    // Announce-only: a member who is not an admin may not send there.
    let r = api
        .request(
            reqwest::Method::PUT,
            &format!("/sessions/a/groups/{gid}/settings"),
        )
        .json(&json!({"announce": true}));
    api.send(r).await.expect(200);
    let refused = wait_for(Duration::from_secs(10), || async {
        let r = api
            .post_json(
                "/sessions/b/messages/text",
                &json!({"to": gid, "text": "may I?"}),
            )
            .await;
        (r.code() == 403).then_some(r)
    })
    .await
    .expect("403 for a non-admin in an announce-only group");
    refused.expect_error(403, "not_group_admin");
}

#[tokio::test(flavor = "multi_thread")]
async fn join_by_code_or_link_and_read_invite_info() {
    let (sim, server) = setup().await;
    sim.pair_by_qr(&server, "owner", "6285500000031", "owner")
        .await;
    let api = server.api();
    let gid = api
        .post_json(
            "/sessions/owner/groups",
            &json!({"name": "Joinable", "participants": []}),
        )
        .await
        .expect(200)["group_jid"]
        .as_str()
        .unwrap()
        .to_string();
    let link = api
        .get(&format!("/sessions/owner/groups/{gid}/invite-link"))
        .await
        .expect(200)["invite_link"]
        .as_str()
        .unwrap()
        .to_string();
    let code = link.rsplit('/').next().unwrap().to_string();

    let info = api
        .get(&format!("/sessions/a/groups/invite-info?code={code}"))
        .await
        .expect(200);
    assert_eq!(
        keys(&info),
        [
            "created_at",
            "jid",
            "name",
            "owner",
            "participant_count",
            "topic"
        ]
    );
    assert_eq!(info["jid"], gid);
    assert_eq!(info["name"], "Joinable");
    assert_eq!(info["owner"], user("6285500000031"));
    assert_eq!(info["participant_count"], 1);
    assert_eq!(
        role_of(&sim.group(&gid).await, &user("6285500000001")),
        None,
        "not joined yet"
    );

    let joined = api
        .post_json("/sessions/a/groups/join", &json!({"code": link}))
        .await
        .expect(200);
    assert_eq!(joined, json!({"group_jid": gid}));
    assert_eq!(
        role_of(&sim.group(&gid).await, &user("6285500000001")).as_deref(),
        Some("member")
    );
    let listed = wait_until(Duration::from_secs(10), || async {
        api.get("/sessions/a/groups?refresh=true").await.json()["total"] == 1
    })
    .await;
    assert!(listed);

    // Unknown or revoked codes are 404 not_found; malformed ones 400.
    api.get(&format!(
        "/sessions/owner/groups/{gid}/invite-link?reset=true"
    ))
    .await
    .expect(200);
    api.post_json("/sessions/a/groups/join", &json!({"code": code}))
        .await
        .expect_error(404, "not_found");
    api.get("/sessions/a/groups/invite-info?code=NoSuchCode123")
        .await
        .expect_error(404, "not_found");
    api.post_json("/sessions/a/groups/join", &json!({"code": "not a code!"}))
        .await
        .expect_error(400, "validation");
    api.get("/sessions/a/groups/invite-info")
        .await
        .expect_error(400, "validation");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_reads_costs_one_query_per_group_and_the_cache_survives_restart() {
    let (sim, mut server) = setup().await;
    let api = server.api();
    let b = sim.user("6285500000042").await;
    let mut gids = Vec::new();
    for name in ["One", "Two"] {
        let gid = api
            .post_json(
                "/sessions/a/groups",
                &json!({"name": name, "participants": [b]}),
            )
            .await
            .expect(200)["group_jid"]
            .as_str()
            .unwrap()
            .to_string();
        gids.push(gid);
    }
    let before = sim.stats().await;
    let participating = |s: &Value| s["iqs"]["w:g2/participating"].as_u64().unwrap_or(0);
    let queries = |s: &Value, g: &str| s["group_queries"][g].as_u64().unwrap_or(0);

    let mut burst = Vec::new();
    for i in 0..30 {
        let api = api.clone();
        let path = match i % 3 {
            0 => "/sessions/a/groups".to_string(),
            1 => format!("/sessions/a/groups/{}/info", gids[0]),
            _ => format!("/sessions/a/groups/{}", gids[1]),
        };
        burst.push(tokio::spawn(async move { api.get(&path).await.code() }));
    }
    for r in burst {
        assert_eq!(r.await.unwrap(), 200);
    }
    let after = sim.stats().await;
    assert!(
        participating(&after) <= participating(&before) + 1,
        "{before} -> {after}"
    );
    for g in &gids {
        assert!(
            queries(&after, g) <= queries(&before, g) + 1,
            "{g}: {before} -> {after}"
        );
    }

    // After a crash and restart the cache is served from disk: no query at all.
    server.kill9();
    server.restart().await;
    let api = server.api();
    let back = wait_until(PAIRING, || async {
        api.get("/sessions/a").await.json()["status"] == "logged_in"
    })
    .await;
    assert!(back);
    let before = sim.stats().await;
    let list = api.get("/sessions/a/groups").await.expect(200);
    assert_eq!(list["total"], 2);
    let info = api
        .get(&format!("/sessions/a/groups/{}/info", gids[0]))
        .await
        .expect(200);
    assert_eq!(info["name"], "One");
    let after = sim.stats().await;
    assert_eq!(
        participating(&after),
        participating(&before),
        "{before} -> {after}"
    );
    assert_eq!(queries(&after, &gids[0]), queries(&before, &gids[0]));

    // ?refresh=true forces a query.
    api.get(&format!("/sessions/a/groups/{}?refresh=true", gids[0]))
        .await
        .expect(200);
    assert_eq!(
        queries(&sim.stats().await, &gids[0]),
        queries(&after, &gids[0]) + 1
    );

    // A group this account is not in is asked about once per refresh interval, however often
    // it is read; ?refresh=true asks again.
    let stranger = "120363999999999999@g.us";
    for path in [
        format!("/sessions/a/groups/{stranger}"),
        format!("/sessions/a/groups/{stranger}/info"),
        format!("/sessions/a/groups/{stranger}"),
    ] {
        api.get(&path).await.expect_error(404, "group_not_found");
    }
    assert_eq!(queries(&sim.stats().await, stranger), 1);
    api.get(&format!("/sessions/a/groups/{stranger}?refresh=true"))
        .await
        .expect_error(404, "group_not_found");
    assert_eq!(queries(&sim.stats().await, stranger), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_and_whatsapp_errors_map_to_the_contract() {
    let (sim, server) = setup().await;
    let api = server.api();
    let b = sim.user("6285500000052").await;
    let gid = api
        .post_json(
            "/sessions/a/groups",
            &json!({"name": "Errors", "participants": [b]}),
        )
        .await
        .expect(200)["group_jid"]
        .as_str()
        .unwrap()
        .to_string();

    // Invalid JIDs in every position.
    api.get("/sessions/a/groups/not-a-group")
        .await
        .expect_error(400, "invalid_jid");
    api.get("/sessions/a/groups/628123@s.whatsapp.net/info")
        .await
        .expect_error(400, "invalid_jid");
    api.post_json(
        "/sessions/a/groups",
        &json!({"name": "x", "participants": ["bob"]}),
    )
    .await
    .expect_error(400, "invalid_jid");
    api.post_json(
        &format!("/sessions/a/groups/{gid}/participants"),
        &json!({"participants": ["1@g.us"]}),
    )
    .await
    .expect_error(400, "invalid_jid");
    api.post_json(
        &format!("/sessions/a/groups/{gid}/participants"),
        &json!({"participants": []}),
    )
    .await
    .expect_error(400, "validation");
    api.post_json(
        &format!("/sessions/a/groups/{gid}/admins"),
        &json!({"participants": "x"}),
    )
    .await
    .expect_error(400, "validation");
    api.post_json("/sessions/a/groups", &json!({"participants": [b]}))
        .await
        .expect_error(400, "validation");
    api.post_json("/sessions/a/groups", &json!({"name": "x".repeat(101)}))
        .await
        .expect_error(400, "validation");
    api.post_raw(
        "/sessions/a/groups",
        "application/json",
        b"{\"name\":".to_vec(),
    )
    .await
    .expect_error(400, "invalid_json");
    api.post_raw(
        "/sessions/a/groups",
        "application/json",
        format!("{{\"name\":\"{}\"}}", "x".repeat(2 * 1024 * 1024)).into_bytes(),
    )
    .await
    .expect_error(413, "payload_too_large");

    // Unknown group, not logged in, rate limit, timeout-free error passthrough.
    api.get("/sessions/a/groups/120363999999999999@g.us?refresh=true")
        .await
        .expect_error(404, "group_not_found");
    api.post_json("/sessions", &json!({"id": "offline"}))
        .await
        .expect(201);
    api.get("/sessions/offline/groups")
        .await
        .expect_error(409, "not_logged_in");
    sim.post_ok(
        "/faults",
        json!({"kind": "iq_error", "xmlns": "w:g2", "code": 429, "text": "rate-overlimit", "count": 1}),
    )
    .await;
    let limited = api.get("/sessions/a/groups?refresh=true").await;
    limited.expect_error(429, "rate_limited");
    assert!(
        limited.headers.get("retry-after").is_some(),
        "Retry-After is sent"
    );
    sim.post_ok(
        "/faults",
        json!({"kind": "iq_error", "xmlns": "w:g2", "code": 500, "text": "internal-server-error", "count": 1}),
    )
    .await;
    let failed = api
        .get(&format!("/sessions/a/groups/{gid}?refresh=true"))
        .await;
    let message = failed.expect_error(502, "whatsapp_error");
    assert!(
        message.contains("500"),
        "WhatsApp's code is included: {message}"
    );
    api.get(&format!("/sessions/a/groups/{gid}"))
        .await
        .expect(200);

    // Settings are one call per setting: when a later one fails, the earlier one stays
    // applied at WhatsApp, and the cache reads the group again to learn it.
    sim.post_ok(
        "/faults",
        json!({"kind": "iq_error", "xmlns": "w:g2", "code": 500, "skip": 1, "count": 1}),
    )
    .await;
    let r = api
        .request(
            reqwest::Method::PUT,
            &format!("/sessions/a/groups/{gid}/settings"),
        )
        .json(&json!({"announce": true, "locked": true}));
    api.send(r).await.expect_error(502, "whatsapp_error");
    let at_wa = sim.group(&gid).await;
    assert_eq!(
        (&at_wa["announce"], &at_wa["locked"]),
        (&json!(true), &json!(false)),
        "{at_wa}"
    );
    let cached = wait_for(Duration::from_secs(10), || async {
        let snapshot = server
            .admin()
            .get("/admin/sessions/a/snapshot")
            .await
            .expect(200);
        let group = snapshot["groups"][gid.as_str()]["data"].clone();
        (group["announce"] == true).then_some(group)
    })
    .await
    .expect("the cache learns the setting that was applied");
    assert_eq!(cached["locked"], false, "{cached}");

    // A change WhatsApp finds unacceptable is the client's mistake: 400, never 5xx.
    sim.post_ok(
        "/faults",
        json!({"kind": "iq_error", "xmlns": "w:g2", "code": 406, "text": "not-acceptable", "count": 1}),
    )
    .await;
    let r = api
        .request(
            reqwest::Method::PUT,
            &format!("/sessions/a/groups/{gid}/subject"),
        )
        .json(&json!({"subject": "Accepted here"}));
    let message = api.send(r).await.expect_error(400, "validation");
    assert!(message.contains("406"), "{message}");
}

/// The group's name and description as WhatsApp holds them; wagate's cached read and a
/// fresh query must both show exactly the same.
async fn texts_everywhere(api: &Api, sim: &Sim, gid: &str) -> (String, String) {
    let at_wa = sim.group(gid).await;
    let name = at_wa["subject"].as_str().unwrap_or_default().to_string();
    let topic = at_wa["description"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for path in [
        format!("/sessions/a/groups/{gid}/info"),
        format!("/sessions/a/groups/{gid}/info?refresh=true"),
    ] {
        let info = api.get(&path).await.expect(200);
        assert_eq!(info["name"], name, "{path}: {info}");
        assert_eq!(info["topic"], topic, "{path}: {info}");
    }
    (name, topic)
}

/// A write either succeeds or is refused as invalid input; a 200 must have stored exactly
/// what was sent, a refusal nothing at all. `must` marks text WhatsApp takes as it is.
#[track_caller]
fn accepted(reply: &Reply, text: &str, must: bool) -> bool {
    match reply.code() {
        200 => true,
        400 if !must => {
            reply.expect_error(400, "validation");
            false
        }
        _ => panic!("{text:?}: {} {}", reply.code(), reply.text()),
    }
}

/// Names, subjects and descriptions with `@`, emoji and control characters: every write
/// gets a defined answer (never a timeout), and whatever wagate accepted is exactly what
/// WhatsApp stored and what wagate reads back. Control characters are WhatsApp's to refuse,
/// so for those a validation refusal would do as well.
#[tokio::test(flavor = "multi_thread")]
async fn at_signs_emoji_and_control_characters_arrive_exactly_or_are_refused() {
    let (sim, server) = setup().await;
    let api = server.api();
    let b = sim.user("6285500000062").await;

    // The client writes short text with an `@` as a JID pair: these used to time out.
    let mut gid = String::new();
    for (name, must) in [
        ("Sales @ HQ", true),
        ("🚀 Launch @ HQ", true),
        ("tab\t@ bell\u{7}", false),
    ] {
        let reply = api
            .post_json(
                "/sessions/a/groups",
                &json!({"name": name, "participants": [b]}),
            )
            .await;
        if !accepted(&reply, name, must) {
            continue;
        }
        gid = reply.json()["group_jid"].as_str().unwrap().to_string();
        let (stored, _) = texts_everywhere(&api, &sim, &gid).await;
        assert_eq!(stored, name);
        let list = api.get("/sessions/a/groups").await.expect(200);
        assert!(
            list["groups"]
                .as_array()
                .unwrap()
                .contains(&json!({"jid": gid, "name": name, "participant_count": 2})),
            "{list}"
        );
    }

    for (subject, must) in [
        ("Team @ Office", true),
        ("🚀 Launch @ HQ", true),
        ("@", true),
        ("x @ y @ z", true),
        ("tab\there", false),
        ("bell\u{7} @ noon", false),
    ] {
        let before = texts_everywhere(&api, &sim, &gid).await;
        let r = api
            .request(
                reqwest::Method::PUT,
                &format!("/sessions/a/groups/{gid}/subject"),
            )
            .json(&json!({"subject": subject}));
        let reply = api.send(r).await;
        let after = texts_everywhere(&api, &sim, &gid).await;
        if accepted(&reply, subject, must) {
            assert_eq!(reply.json(), json!({"success": true}));
            assert_eq!(after.0, subject);
        } else {
            assert_eq!(after, before);
        }
    }

    for (description, must) in [
        ("write to a@b.com", true),
        ("🚀 Launch @ HQ\nsecond line", true),
        ("tab\tseparated @ columns", true),
        ("bell \u{7} @ ring", false),
        ("nul\u{0}@x", false),
    ] {
        let before = texts_everywhere(&api, &sim, &gid).await;
        let r = api
            .request(
                reqwest::Method::PUT,
                &format!("/sessions/a/groups/{gid}/description"),
            )
            .json(&json!({"description": description}));
        let reply = api.send(r).await;
        let after = texts_everywhere(&api, &sim, &gid).await;
        if accepted(&reply, description, must) {
            assert_eq!(reply.json(), json!({"success": true}));
            assert_eq!(after.1, description);
        } else {
            assert_eq!(after, before);
        }
    }
    let stats = sim.stats().await;
    assert_eq!(stats["unknown_iqs"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn waxum_settings_apply_at_whatsapp_on_creation_and_change() {
    let (sim, server) = setup().await;
    let api = server.api();
    let b = sim.user("6285500000002").await;
    // Creation takes waxum's modes.
    let gid = api
        .post_json(
            "/sessions/a/groups",
            &json!({
                "name": "Modes",
                "participants": [b],
                "member_add_mode": "admin_add",
                "membership_approval_mode": "on",
            }),
        )
        .await
        .expect(200)["group_jid"]
        .as_str()
        .unwrap()
        .to_string();
    let at_wa = sim.group(&gid).await;
    assert_eq!(at_wa["member_add_mode"], "admin_add", "{at_wa}");
    assert_eq!(at_wa["membership_approval"], true, "{at_wa}");

    // Settings take them too, beside announce and locked.
    let settings = format!("/sessions/a/groups/{gid}/settings");
    api.put_json(
        &settings,
        &json!({"member_add_mode": "all_member_add", "membership_approval_mode": "off", "announce": true}),
    )
    .await
    .expect(200);
    let at_wa = sim.group(&gid).await;
    assert_eq!(at_wa["member_add_mode"], "all_member_add", "{at_wa}");
    assert_eq!(at_wa["membership_approval"], false, "{at_wa}");
    assert_eq!(at_wa["announce"], true, "{at_wa}");
    api.put_json(&settings, &json!({"member_link_mode": "all_member_link"}))
        .await
        .expect(200);
    assert_eq!(sim.group(&gid).await["member_link_mode"], "all_member_link");

    // A LID-addressed group: members still come with their phone numbers.
    sim.post_ok(&format!("/groups/{gid}/addressing"), json!({"mode": "lid"}))
        .await;
    let info = api
        .get(&format!("/sessions/a/groups/{gid}/info?refresh=true"))
        .await
        .expect(200);
    assert_eq!(info["addressing_mode"], "lid", "{info}");
    let member = info["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phone_number"] == b)
        .unwrap_or_else(|| panic!("b with its phone number: {info}"))
        .clone();
    assert_eq!(
        member["jid"],
        b.as_str(),
        "members are named by phone number"
    );
    assert_eq!(
        api.get(&format!("/sessions/a/groups/{gid}"))
            .await
            .expect(200)["addressing_mode"],
        "lid"
    );

    // Values outside waxum's are refused, naming the field.
    for (field, value) in [
        ("member_add_mode", "everyone"),
        ("member_link_mode", "nobody"),
        ("membership_approval_mode", "maybe"),
    ] {
        let message = api
            .put_json(&settings, &json!({ field: value }))
            .await
            .expect_error(400, "validation");
        assert!(message.contains(field), "{message}");
        let message = api
            .post_json("/sessions/a/groups", &json!({"name": "X", field: value}))
            .await
            .expect_error(400, "validation");
        assert!(message.contains(field), "{message}");
    }
    api.put_json(&settings, &json!({}))
        .await
        .expect_error(400, "validation");
}
