//! Property tests of every parser at the edge: whatever arrives, no panic, and a refusal is
//! always one of the contract's codes. `PROPTEST_CASES` raises the number of cases per property
//! (default 256).

use proptest::prelude::*;
use warp::http::{HeaderMap, Method};

use wagate::api::models::{
    CreateGroup, CreateSession, GroupSettings, PairRequest, Participants, SendText, SetDescription,
};
use wagate::api::request::{Request, parse_flag, session_id};
use wagate::api::router::{ROUTES, resolve};
use wagate_actors::invites::invite_code;
use wagate_actors::model::{ChatJid, GroupJid, UserJid, normalize_phone};

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9+ ()@.:a-z-]{0,40}",
        "[0-9]{1,20}(@(s.whatsapp.net|g.us|lid|c.us|x))?",
        "[0-9]{5,12}-[0-9]{5,12}(@g.us)?",
    ]
}

fn body_codes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(), String> {
    match wagate::api::models::parse_json::<T>(bytes) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.code(), "invalid_json" | "validation") => Ok(()),
        Err(e) => Err(format!("unexpected code {}", e.code())),
    }
}

proptest! {
    #[test]
    fn session_ids_are_accepted_exactly_when_the_contract_says(raw in any_text()) {
        let valid = (1..=64).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        match session_id(&raw) {
            Ok(id) => { prop_assert!(valid); prop_assert_eq!(id.as_str(), raw.as_str()); }
            Err(e) => { prop_assert!(!valid); prop_assert_eq!(e.code(), "invalid_session_id"); }
        }
    }

    #[test]
    fn jids_and_phone_numbers_parse_to_a_fixed_point(raw in any_text()) {
        if let Some(user) = UserJid::parse(&raw) {
            prop_assert_eq!(UserJid::parse(user.as_str()), Some(user.clone()));
            prop_assert!(GroupJid::parse(user.as_str()).is_none());
        }
        if let Some(group) = GroupJid::parse(&raw) {
            prop_assert_eq!(GroupJid::parse(group.as_str()), Some(group.clone()));
            prop_assert!(group.as_str().ends_with("@g.us"));
        }
        if let Some(chat) = ChatJid::parse(&raw) {
            prop_assert_eq!(ChatJid::parse(chat.as_str()), Some(chat.clone()));
        }
        if let Ok(digits) = normalize_phone(&raw) {
            prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()));
            prop_assert!((7..=15).contains(&digits.len()));
        }
    }

    #[test]
    fn flags_are_only_true_false_one_zero(raw in any_text()) {
        let expected = match raw.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        };
        prop_assert_eq!(parse_flag(&raw), expected);
    }

    #[test]
    fn invite_codes_are_alphanumeric(raw in any_text()) {
        if let Some(code) = invite_code(&raw) {
            prop_assert!((6..=64).contains(&code.len()));
            prop_assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn bodies_are_parsed_or_refused_with_a_contract_code(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            any_text().prop_map(String::into_bytes),
            "\\{(\"[a-z_]{1,12}\": ?(null|true|1|\"x\"|\\[\\]|\\{\\}),? ?){0,4}\\}".prop_map(String::into_bytes),
        ]
    ) {
        body_codes::<CreateSession>(&bytes).map_err(TestCaseError::fail)?;
        body_codes::<PairRequest>(&bytes).map_err(TestCaseError::fail)?;
        body_codes::<CreateGroup>(&bytes).map_err(TestCaseError::fail)?;
        body_codes::<SetDescription>(&bytes).map_err(TestCaseError::fail)?;
        body_codes::<Participants>(&bytes).map_err(TestCaseError::fail)?;
        body_codes::<GroupSettings>(&bytes).map_err(TestCaseError::fail)?;
        body_codes::<SendText>(&bytes).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn every_path_resolves_or_misses(
        segments in proptest::collection::vec(
            prop_oneof![Just("api".to_owned()), Just("v1".to_owned()), Just("sessions".to_owned()),
                        Just("groups".to_owned()), any_text()],
            0..8,
        ),
        method in prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::PUT),
                              Just(Method::DELETE), Just(Method::PATCH)],
    ) {
        let path = format!("/{}", segments.join("/"));
        let _ = resolve(&ROUTES, &method, &path);
    }

    #[test]
    fn query_strings_are_read_or_refused_as_validation(raw in any_text()) {
        let request = Request::new(
            vec!["s".into(), raw.clone()],
            &raw,
            HeaderMap::new(),
            Box::pin(futures_util::stream::empty()),
            1024,
        );
        match request {
            Ok(r) => {
                for name in ["refresh", "reset"] {
                    if let Err(e) = r.flag(name) { prop_assert_eq!(e.code(), "validation"); }
                }
                if let Err(e) = r.group() { prop_assert_eq!(e.code(), "invalid_jid"); }
            }
            Err(e) => prop_assert_eq!(e.code(), "validation"),
        }
    }
}
