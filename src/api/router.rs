//! The route table: every (method, path) the server answers, who may call it, and how a
//! request path finds its route. Pure and order-independent: a literal segment always beats a
//! `{param}` in the same place (so `groups/join` is never read as a group JID), and a path
//! that exists under other methods answers 405 naming them.

use std::sync::LazyLock;
use warp::http::Method;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// The API token (or the admin token, which opens everything).
    Api,
    Admin,
}

/// Every operation the edge serves; one handler each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Health,
    Ready,
    Metrics,
    CreateSession,
    ListSessions,
    GetSession,
    DeleteSession,
    SessionStatus,
    Connect,
    Disconnect,
    Logout,
    Qr,
    Pair,
    Device,
    ListGroups,
    CreateGroup,
    JoinGroup,
    InviteInfo,
    GetGroup,
    GroupInfo,
    SetSubject,
    SetDescription,
    LeaveGroup,
    AddParticipants,
    RemoveParticipants,
    PromoteAdmins,
    DemoteAdmins,
    InviteLink,
    GroupSettings,
    SendText,
    PullEvents,
    StreamEvents,
    CreateWebhook,
    ListWebhooks,
    GetWebhook,
    UpdateWebhook,
    DeleteWebhook,
    ReplayWebhook,
    ActorTree,
    Actor,
    RestartActor,
    #[cfg(feature = "test-server")]
    CrashActor,
    SessionSnapshot,
    StreamAllEvents,
    OpenApi,
    Docs,
    DocsFile,
    Dashboard,
    DashboardAsset,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub method: Method,
    /// `/`-separated segments; `{name}` matches any one segment.
    pub pattern: &'static str,
    pub endpoint: Endpoint,
    pub access: Access,
    /// The pattern's segments, split once.
    segments: Vec<&'static str>,
}

fn route(method: Method, pattern: &'static str, endpoint: Endpoint, access: Access) -> Route {
    Route {
        method,
        pattern,
        endpoint,
        access,
        segments: pattern.split('/').skip(1).collect(),
    }
}

fn is_param(segment: &str) -> bool {
    segment.starts_with('{')
}

/// The table, in the contract's order.
pub static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
    use Access::{Admin, Api, Public};
    use Endpoint as E;
    let mut routes = vec![
        route(Method::GET, "/health", E::Health, Public),
        route(Method::GET, "/ready", E::Ready, Public),
        route(Method::GET, "/metrics", E::Metrics, Admin),
        // sessions.md
        route(Method::POST, "/api/v1/sessions", E::CreateSession, Api),
        route(Method::GET, "/api/v1/sessions", E::ListSessions, Api),
        route(Method::GET, "/api/v1/sessions/{id}", E::GetSession, Api),
        route(
            Method::DELETE,
            "/api/v1/sessions/{id}",
            E::DeleteSession,
            Api,
        ),
        route(
            Method::GET,
            "/api/v1/sessions/{id}/status",
            E::SessionStatus,
            Api,
        ),
        route(
            Method::POST,
            "/api/v1/sessions/{id}/connect",
            E::Connect,
            Api,
        ),
        route(
            Method::POST,
            "/api/v1/sessions/{id}/disconnect",
            E::Disconnect,
            Api,
        ),
        route(Method::POST, "/api/v1/sessions/{id}/logout", E::Logout, Api),
        route(Method::GET, "/api/v1/sessions/{id}/qr", E::Qr, Api),
        route(Method::POST, "/api/v1/sessions/{id}/pair", E::Pair, Api),
        route(Method::GET, "/api/v1/sessions/{id}/device", E::Device, Api),
        // groups.md, in its order, then groups-extra.md
        route(
            Method::GET,
            "/api/v1/sessions/{id}/groups",
            E::ListGroups,
            Api,
        ),
        route(
            Method::POST,
            "/api/v1/sessions/{id}/groups",
            E::CreateGroup,
            Api,
        ),
        route(
            Method::GET,
            "/api/v1/sessions/{id}/groups/{group_jid}",
            E::GetGroup,
            Api,
        ),
        route(
            Method::GET,
            "/api/v1/sessions/{id}/groups/{group_jid}/info",
            E::GroupInfo,
            Api,
        ),
        route(
            Method::PUT,
            "/api/v1/sessions/{id}/groups/{group_jid}/subject",
            E::SetSubject,
            Api,
        ),
        route(
            Method::PUT,
            "/api/v1/sessions/{id}/groups/{group_jid}/description",
            E::SetDescription,
            Api,
        ),
        route(
            Method::POST,
            "/api/v1/sessions/{id}/groups/{group_jid}/leave",
            E::LeaveGroup,
            Api,
        ),
        route(
            Method::POST,
            "/api/v1/sessions/{id}/groups/{group_jid}/participants",
            E::AddParticipants,
            Api,
        ),
        route(
            Method::DELETE,
            "/api/v1/sessions/{id}/groups/{group_jid}/participants",
            E::RemoveParticipants,
            Api,
        ),
        route(
            Method::POST,
            "/api/v1/sessions/{id}/groups/{group_jid}/admins",
            E::PromoteAdmins,
            Api,
        ),
        route(
            Method::DELETE,
            "/api/v1/sessions/{id}/groups/{group_jid}/admins",
            E::DemoteAdmins,
            Api,
        ),
        route(
            Method::GET,
            "/api/v1/sessions/{id}/groups/{group_jid}/invite-link",
            E::InviteLink,
            Api,
        ),
        route(
            Method::POST,
            "/api/v1/sessions/{id}/groups/join",
            E::JoinGroup,
            Api,
        ),
        route(
            Method::GET,
            "/api/v1/sessions/{id}/groups/invite-info",
            E::InviteInfo,
            Api,
        ),
        route(
            Method::PUT,
            "/api/v1/sessions/{id}/groups/{group_jid}/settings",
            E::GroupSettings,
            Api,
        ),
        // messages.md
        route(
            Method::POST,
            "/api/v1/sessions/{id}/messages/text",
            E::SendText,
            Api,
        ),
        // events.md
        route(
            Method::GET,
            "/api/v1/sessions/{id}/events",
            E::PullEvents,
            Api,
        ),
        route(
            Method::GET,
            "/api/v1/sessions/{id}/events/stream",
            E::StreamEvents,
            Api,
        ),
        route(
            Method::GET,
            "/api/v1/events/stream",
            E::StreamAllEvents,
            Api,
        ),
        route(Method::POST, "/api/v1/webhooks", E::CreateWebhook, Api),
        route(Method::GET, "/api/v1/webhooks", E::ListWebhooks, Api),
        route(Method::GET, "/api/v1/webhooks/{id}", E::GetWebhook, Api),
        route(Method::PUT, "/api/v1/webhooks/{id}", E::UpdateWebhook, Api),
        route(
            Method::DELETE,
            "/api/v1/webhooks/{id}",
            E::DeleteWebhook,
            Api,
        ),
        route(
            Method::POST,
            "/api/v1/webhooks/{id}/replay",
            E::ReplayWebhook,
            Api,
        ),
        // admin.md
        route(Method::GET, "/api/v1/admin/actors", E::ActorTree, Admin),
        route(Method::GET, "/api/v1/admin/actors/{name}", E::Actor, Admin),
        route(
            Method::POST,
            "/api/v1/admin/actors/{name}/restart",
            E::RestartActor,
            Admin,
        ),
        route(
            Method::GET,
            "/api/v1/admin/sessions/{id}/snapshot",
            E::SessionSnapshot,
            Admin,
        ),
        // The browser's: the dashboard, the docs UI and the document it reads.
        route(Method::GET, "/", E::Dashboard, Public),
        route(Method::GET, "/assets/{file}", E::DashboardAsset, Public),
        route(Method::GET, "/docs", E::Docs, Public),
        route(Method::GET, "/docs/{file}", E::DocsFile, Public),
        route(Method::GET, "/api/v1/openapi.json", E::OpenApi, Public),
    ];
    routes.extend(test_only_routes());
    routes
});

/// The test-only crash trigger (admin.md's restart, with a panic instead of a stop).
#[cfg(feature = "test-server")]
fn test_only_routes() -> Vec<Route> {
    vec![route(
        Method::POST,
        "/api/v1/admin/actors/{name}/crash",
        Endpoint::CrashActor,
        Access::Admin,
    )]
}

#[cfg(not(feature = "test-server"))]
fn test_only_routes() -> Vec<Route> {
    Vec::new()
}

/// Why a request found no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    NotFound,
    /// The path exists, under these methods only.
    MethodNotAllowed(Vec<Method>),
}

/// A request's route, with its path parameters percent-decoded, in pattern order.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched {
    pub route: &'static Route,
    pub params: Vec<String>,
}

/// How many of the route's segments are literal, when the path fits it.
fn fit(route: &Route, segments: &[&str]) -> Option<usize> {
    if route.segments.len() != segments.len() {
        return None;
    }
    let mut literal = 0;
    for (want, got) in route.segments.iter().zip(segments) {
        if is_param(want) {
            if got.is_empty() {
                return None;
            }
        } else if want == got {
            literal += 1;
        } else {
            return None;
        }
    }
    Some(literal)
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// Finds the route for `method` and `path` in `routes`.
pub fn resolve(routes: &'static [Route], method: &Method, path: &str) -> Result<Matched, Miss> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let fits: Vec<(&'static Route, usize)> = routes
        .iter()
        .filter_map(|r| fit(r, &segments).map(|literal| (r, literal)))
        .collect();
    let Some(best) = fits.iter().map(|(_, literal)| *literal).max() else {
        return Err(Miss::NotFound);
    };
    let candidates = fits.iter().filter(|(_, literal)| *literal == best);
    let mut allowed = Vec::new();
    for (route, _) in candidates {
        if route.method == *method {
            let params = route
                .segments
                .iter()
                .zip(&segments)
                .filter(|(want, _)| is_param(want))
                .map(|(_, got)| decode(got))
                .collect();
            return Ok(Matched { route, params });
        }
        if !allowed.contains(&route.method) {
            allowed.push(route.method.clone());
        }
    }
    Err(Miss::MethodNotAllowed(allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(method: Method, path: &str) -> Result<(Endpoint, Vec<String>), Miss> {
        resolve(&ROUTES, &method, path).map(|m| (m.route.endpoint, m.params))
    }

    #[test]
    fn literal_segments_beat_parameters_whatever_the_order() {
        assert_eq!(
            at(Method::POST, "/api/v1/sessions/s1/groups/join"),
            Ok((Endpoint::JoinGroup, vec!["s1".into()]))
        );
        assert_eq!(
            at(Method::GET, "/api/v1/sessions/s1/groups/invite-info"),
            Ok((Endpoint::InviteInfo, vec!["s1".into()]))
        );
        assert_eq!(
            at(
                Method::GET,
                "/api/v1/sessions/s1/groups/120363000000000001@g.us"
            ),
            Ok((
                Endpoint::GetGroup,
                vec!["s1".into(), "120363000000000001@g.us".into()]
            ))
        );
    }

    #[test]
    fn a_path_under_other_methods_is_405_naming_them() {
        assert_eq!(
            at(Method::GET, "/api/v1/sessions/s1/groups/join"),
            Err(Miss::MethodNotAllowed(vec![Method::POST]))
        );
        assert_eq!(
            at(Method::PATCH, "/api/v1/sessions/s1"),
            Err(Miss::MethodNotAllowed(vec![Method::GET, Method::DELETE]))
        );
        assert_eq!(
            at(Method::PUT, "/api/v1/sessions/s1/groups/g/participants"),
            Err(Miss::MethodNotAllowed(vec![Method::POST, Method::DELETE]))
        );
    }

    #[test]
    fn unknown_paths_are_404() {
        assert_eq!(at(Method::GET, "/api/v1/nope"), Err(Miss::NotFound));
        assert_eq!(at(Method::GET, "/api/v1/sessions/"), Err(Miss::NotFound));
        assert_eq!(
            at(Method::GET, "/api/v1/sessions/a/b/c/d/e/f"),
            Err(Miss::NotFound)
        );
        assert_eq!(at(Method::GET, "//"), Err(Miss::NotFound));
        assert_eq!(at(Method::GET, "/docs/"), Err(Miss::NotFound));
    }

    #[test]
    fn parameters_are_percent_decoded() {
        assert_eq!(
            at(Method::GET, "/api/v1/admin/actors/session%3Aa%2Fgroups"),
            Ok((Endpoint::Actor, vec!["session:a/groups".into()]))
        );
    }

    #[test]
    fn every_route_is_reachable_and_unique() {
        for route in ROUTES.iter() {
            let path = route
                .pattern
                .replace("{id}", "s")
                .replace("{group_jid}", "1-2@g.us")
                .replace("{name}", "n")
                .replace("{file}", "f");
            let found = resolve(&ROUTES, &route.method, &path).expect("route resolves");
            assert_eq!(
                found.route.endpoint, route.endpoint,
                "{} {}",
                route.method, route.pattern
            );
        }
    }
}
