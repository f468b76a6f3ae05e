//! The session status machine as pure functions: what a connection's events make of the
//! reported status, and what the contract's `status` is given the stored record, the live
//! connection and whether the supervisor gave up on the session.

use crate::model::SessionStatus;
use crate::whatsapp::WaEvent;

/// What the current connection says, with whether its socket is up right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    pub reported: SessionStatus,
    pub socket_alive: bool,
}

/// The status a session shows.
pub fn effective(failed: bool, stored: SessionStatus, live: Option<Live>) -> SessionStatus {
    if failed {
        return SessionStatus::Failed;
    }
    let Some(live) = live else {
        return stored;
    };
    match live.reported {
        // The socket can drop before the client reports it: never claim a login without one.
        SessionStatus::LoggedIn if !live.socket_alive => SessionStatus::Connecting,
        SessionStatus::Connecting if live.socket_alive => SessionStatus::Connected,
        other => other,
    }
}

/// The reported status after a connection event.
pub fn after_event(reported: SessionStatus, event: &WaEvent) -> SessionStatus {
    match event {
        WaEvent::Qr { .. } => SessionStatus::WaitingForQr,
        WaEvent::PairCode { .. } => SessionStatus::WaitingForPairCode,
        WaEvent::PairSuccess(_) => SessionStatus::Connected,
        WaEvent::Connected(_) => SessionStatus::LoggedIn,
        WaEvent::Disconnected(_) | WaEvent::Reconnecting(_) => SessionStatus::Connecting,
        WaEvent::LoggedOut(_) => SessionStatus::LoggedOut,
        WaEvent::Replaced => SessionStatus::Failed,
        WaEvent::QrExhausted | WaEvent::PairError(_) | WaEvent::Group(_) | WaEvent::Ack(_) => {
            reported
        }
    }
}

/// The stored status once a connection has ended without a logout.
pub fn after_exit(stored: SessionStatus, wanted_online: bool) -> SessionStatus {
    match stored {
        SessionStatus::Failed => SessionStatus::Failed,
        _ if wanted_online => SessionStatus::Connecting,
        _ => SessionStatus::Disconnected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whatsapp::Identity;
    use SessionStatus as S;
    use std::time::Duration;

    fn live(reported: SessionStatus, socket_alive: bool) -> Option<Live> {
        Some(Live {
            reported,
            socket_alive,
        })
    }

    #[test]
    fn failed_wins_over_everything() {
        assert_eq!(
            effective(true, S::LoggedIn, live(S::LoggedIn, true)),
            S::Failed
        );
    }

    #[test]
    fn without_a_connection_the_stored_status_shows() {
        assert_eq!(effective(false, S::Disconnected, None), S::Disconnected);
        assert_eq!(effective(false, S::LoggedOut, None), S::LoggedOut);
    }

    #[test]
    fn the_socket_decides_between_connecting_connected_and_logged_in() {
        assert_eq!(
            effective(false, S::LoggedIn, live(S::LoggedIn, false)),
            S::Connecting
        );
        assert_eq!(
            effective(false, S::LoggedIn, live(S::LoggedIn, true)),
            S::LoggedIn
        );
        assert_eq!(
            effective(false, S::Connecting, live(S::Connecting, true)),
            S::Connected
        );
        assert_eq!(
            effective(false, S::Connecting, live(S::WaitingForQr, true)),
            S::WaitingForQr
        );
    }

    #[test]
    fn events_move_the_reported_status() {
        let qr = WaEvent::Qr {
            code: "2@x".into(),
            timeout: Duration::from_secs(60),
        };
        assert_eq!(after_event(S::Connecting, &qr), S::WaitingForQr);
        let connected = WaEvent::Connected(Identity::default());
        assert_eq!(after_event(S::WaitingForQr, &connected), S::LoggedIn);
        assert_eq!(
            after_event(S::LoggedIn, &WaEvent::Disconnected("x".into())),
            S::Connecting
        );
        assert_eq!(
            after_event(S::LoggedIn, &WaEvent::LoggedOut("x".into())),
            S::LoggedOut
        );
        assert_eq!(
            after_event(S::WaitingForQr, &WaEvent::QrExhausted),
            S::WaitingForQr
        );
    }

    #[test]
    fn an_ended_connection_leaves_what_the_operator_wanted() {
        assert_eq!(after_exit(S::LoggedIn, true), S::Connecting);
        assert_eq!(after_exit(S::LoggedIn, false), S::Disconnected);
        assert_eq!(after_exit(S::Failed, true), S::Failed);
    }
}
