//! What a failed WhatsApp round-trip means, decided per operation: the same server code means
//! "not a member" for a group query, "not an admin" for a group change and nothing
//! group-related at all for a pair-code request.

use std::time::Duration;

use crate::error::GatewayError;

/// How a round-trip failed on the wire, before it is given a meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaFailure {
    /// No answer within the operation's timeout.
    Timeout,
    /// The socket was down, or dropped before the answer came.
    NotConnected,
    /// WhatsApp answered with an error code; `backoff` is its retry hint in seconds.
    Server {
        code: u16,
        text: String,
        backoff: Option<u32>,
    },
    /// Anything else the client reported.
    Other(String),
}

/// The operations the port performs, each with its own reading of WhatsApp's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Reading a group's metadata or the list of groups.
    GroupQuery,
    /// Creating a group or changing one (subject, description, participants, settings, leave).
    GroupChange,
    /// Reading or resetting a group's invite link.
    InviteLink,
    /// Joining by invite code, or reading the group behind one.
    InviteCode,
    PairCode,
    SendMessage,
    Logout,
}

impl Operation {
    /// The operation's name in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::GroupQuery => "group_query",
            Self::GroupChange => "group_change",
            Self::InviteLink => "invite_link",
            Self::InviteCode => "invite_code",
            Self::PairCode => "pair_code",
            Self::SendMessage => "send_message",
            Self::Logout => "logout",
        }
    }
}

/// The default retry hint for a rate limit that came without one.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The domain error for a failed `operation`.
pub fn meaning(operation: Operation, failure: WaFailure, timeout: Duration) -> GatewayError {
    let (code, text, backoff) = match failure {
        WaFailure::Timeout => return GatewayError::WhatsAppTimeout(timeout),
        WaFailure::NotConnected => {
            return GatewayError::NotConnected("the connection to WhatsApp is down".into());
        }
        WaFailure::Other(message) => {
            return GatewayError::WhatsApp {
                code: None,
                message,
            };
        }
        WaFailure::Server {
            code,
            text,
            backoff,
        } => (code, text, backoff),
    };
    use Operation as Op;
    match (operation, code) {
        (_, 429) => GatewayError::RateLimited {
            retry_after: Some(
                backoff
                    .map(|s| Duration::from_secs(u64::from(s)))
                    .unwrap_or(DEFAULT_RETRY_AFTER),
            ),
        },
        // A group this account cannot read is, for it, a group that does not exist.
        (Op::GroupQuery, 401 | 403 | 404) => GatewayError::GroupNotFound,
        (Op::GroupChange | Op::InviteLink, 401 | 403) => {
            GatewayError::NotGroupAdmin(format!("{code} {text}"))
        }
        (Op::GroupChange | Op::InviteLink, 404) => GatewayError::GroupNotFound,
        // WhatsApp refused what was asked as malformed or unacceptable (a value out of its
        // limits): the client's mistake, not a failure of WhatsApp's.
        (Op::GroupChange, 400 | 406) => GatewayError::validation(
            "body",
            format!("WhatsApp did not accept the change ({code} {text})"),
        ),
        (Op::InviteCode, 400 | 404 | 406 | 410) => {
            GatewayError::NotFound("the invite code is unknown, expired or revoked".into())
        }
        (Op::InviteCode, 401 | 403) => GatewayError::NotGroupAdmin(format!("{code} {text}")),
        _ => GatewayError::WhatsApp {
            code: Some(code),
            message: text,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn server(code: u16) -> WaFailure {
        WaFailure::Server {
            code,
            text: "x".into(),
            backoff: None,
        }
    }

    #[test]
    fn a_change_whatsapp_finds_unacceptable_is_the_clients_mistake() {
        for code in [400, 406] {
            let e = meaning(Operation::GroupChange, server(code), T);
            assert!(
                matches!(&e, GatewayError::Validation { message, .. } if message.contains(&code.to_string())),
                "{e:?}"
            );
        }
        assert!(matches!(
            meaning(Operation::GroupQuery, server(406), T),
            GatewayError::WhatsApp {
                code: Some(406),
                ..
            }
        ));
        assert!(matches!(
            meaning(Operation::GroupChange, server(500), T),
            GatewayError::WhatsApp {
                code: Some(500),
                ..
            }
        ));
    }

    #[test]
    fn forbidden_means_not_a_member_for_queries_and_not_an_admin_for_changes() {
        assert!(matches!(
            meaning(Operation::GroupQuery, server(403), T),
            GatewayError::GroupNotFound
        ));
        assert!(matches!(
            meaning(Operation::GroupChange, server(403), T),
            GatewayError::NotGroupAdmin(_)
        ));
        assert!(matches!(
            meaning(Operation::InviteLink, server(401), T),
            GatewayError::NotGroupAdmin(_)
        ));
    }

    #[test]
    fn pair_code_errors_carry_no_group_meaning() {
        for code in [401, 403, 404, 500] {
            match meaning(Operation::PairCode, server(code), T) {
                GatewayError::WhatsApp { code: Some(c), .. } => assert_eq!(c, code),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_invite_codes_are_not_found() {
        for code in [400, 404, 406, 410] {
            assert!(matches!(
                meaning(Operation::InviteCode, server(code), T),
                GatewayError::NotFound(_)
            ));
        }
    }

    #[test]
    fn rate_limits_carry_the_retry_hint() {
        let hinted = WaFailure::Server {
            code: 429,
            text: "rate-overlimit".into(),
            backoff: Some(7),
        };
        assert!(matches!(
            meaning(Operation::SendMessage, hinted, T),
            GatewayError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            meaning(Operation::GroupQuery, server(429), T),
            GatewayError::RateLimited { retry_after: Some(d) } if d == DEFAULT_RETRY_AFTER
        ));
    }

    #[test]
    fn timeouts_and_dropped_sockets_are_the_same_for_every_operation() {
        for op in [
            Operation::GroupQuery,
            Operation::PairCode,
            Operation::SendMessage,
        ] {
            assert!(matches!(
                meaning(op, WaFailure::Timeout, T),
                GatewayError::WhatsAppTimeout(d) if d == T
            ));
            assert!(matches!(
                meaning(op, WaFailure::NotConnected, T),
                GatewayError::NotConnected(_)
            ));
        }
    }
}
