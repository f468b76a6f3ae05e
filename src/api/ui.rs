//! What a browser gets: the dashboard at `/` (its three files compiled into the binary) and
//! the docs UI at `/docs` (Swagger UI, vendored into the binary by `utoipa-swagger-ui`,
//! reading `/api/v1/openapi.json`). Nothing is fetched from anywhere else, at build or run time.

use bytes::Bytes;
use std::sync::{Arc, LazyLock};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::errors::{ApiError, ErrorBody};
use super::request::Request;

const DASHBOARD_HTML: &str = include_str!("../dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("../dashboard/app.js");
const DASHBOARD_CSS: &str = include_str!("../dashboard/app.css");

/// The dashboard runs only its own files and talks only to this server.
const DASHBOARD_CSP: &str = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; \
     script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

static SWAGGER_CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> =
    LazyLock::new(|| Arc::new(utoipa_swagger_ui::Config::from("/api/v1/openapi.json")));

/// A file as the browser gets it: its type, revalidated on every load, never sniffed.
pub(super) fn file(body: impl Into<Bytes>, content_type: HeaderValue) -> Response {
    let mut response = Response::new(body.into().into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    file(body, HeaderValue::from_static(content_type))
}

#[utoipa::path(
    get,
    path = "/",
    tag = "ui",
    summary = "The dashboard",
    responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String)),
)]
pub fn dashboard() -> Response {
    let mut response = page(DASHBOARD_HTML, "text/html; charset=utf-8");
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DASHBOARD_CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[utoipa::path(
    get,
    path = "/assets/{file}",
    tag = "ui",
    summary = "The dashboard's script and style sheet",
    params(("file" = String, Path, description = "`app.js` or `app.css`")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"),
            (String = "text/css"),
        )),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub fn asset(req: &Request) -> Result<Response, ApiError> {
    match req.param(0) {
        "app.js" => Ok(page(DASHBOARD_JS, "text/javascript; charset=utf-8")),
        "app.css" => Ok(page(DASHBOARD_CSS, "text/css; charset=utf-8")),
        _ => Err(ApiError::NotFound),
    }
}

#[utoipa::path(
    get,
    path = "/docs",
    tag = "ui",
    summary = "The API docs (Swagger UI)",
    responses((status = 308, description = "To `/docs/index.html`, where the UI's relative links resolve")),
)]
pub fn docs() -> Response {
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_static("/docs/index.html"),
    );
    response
}

#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "ui",
    summary = "The files of the docs UI",
    params(("file" = String, Path, description = "`index.html` and the files it loads")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/html"),
            (String = "text/javascript"),
            (String = "text/css"),
            (Vec<u8> = "image/png"),
        )),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub fn docs_file(req: &Request) -> Result<Response, ApiError> {
    let served = utoipa_swagger_ui::serve(req.param(0), SWAGGER_CONFIG.clone())
        .map_err(|e| wagate_actors::GatewayError::Internal(format!("docs UI: {e}")))?
        .ok_or(ApiError::NotFound)?;
    let content_type = HeaderValue::from_str(&served.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut response = file(served.bytes.into_owned(), content_type);
    if served.gzpipped {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}
