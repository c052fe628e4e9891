//! The server API: what an application's backend asks of the chat over
//! HTTP — publish into a room, read its history and members, list active
//! rooms, disconnect a user everywhere, count connections. JSON in and out,
//! under `/api/v1`, described by `docs/openapi.yaml` (served at
//! `/api/v1/openapi.yaml`).
//!
//! - [`keys`]: `Authorization: Bearer KEY`, several keys for rotation,
//!   compared in constant time, a request budget per key. Without a key
//!   configured the API is not served at all (404).
//! - [`input`] / [`error`]: bad input is refused with the WebSocket
//!   protocol's error codes as `{code, message}`; bodies are bounded.
//! - [`rooms`], [`users`], [`stats`]: the routes, each a thin call into the
//!   broker, which makes them cluster-wide.
//!
//! The API is served on the main listener, or with `--api-listen` on its
//! own (so it can stay off the public load balancer).

pub(crate) mod error;
pub(crate) mod input;
pub(crate) mod keys;
pub(crate) mod rooms;
pub(crate) mod state;
pub(crate) mod stats;
pub(crate) mod users;

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::header,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get, post},
};
use palaver_protocol::ErrorCode;

use self::{
    error::{ApiCode, ApiError},
    keys::Denied,
};
use crate::node::Node;

/// Where the API lives.
pub(crate) const PREFIX: &str = "/api/v1";

/// The OpenAPI 3.1 description, compiled in and served as is.
pub(crate) const SPEC: &str = include_str!("../../../docs/openapi.yaml");

/// Largest request body: a message of `--max-text` characters fits many times over.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// Every route (method, path under [`PREFIX`]) that needs a key. The router
/// is built from this list and a test checks it against the spec.
pub(crate) const ROUTES: [(&str, &str); 6] = [
    ("post", "/rooms/{room}/messages"),
    ("get", "/rooms/{room}/history"),
    ("get", "/rooms/{room}/members"),
    ("get", "/rooms"),
    ("post", "/users/{user}/disconnect"),
    ("get", "/stats"),
];

/// The unauthenticated route: the spec itself.
pub(crate) const SPEC_ROUTE: (&str, &str) = ("get", "/openapi.yaml");

fn handler(route: (&str, &str)) -> MethodRouter<Arc<Node>> {
    match route {
        ("post", "/rooms/{room}/messages") => post(rooms::publish),
        ("get", "/rooms/{room}/history") => get(rooms::history),
        ("get", "/rooms/{room}/members") => get(rooms::members),
        ("get", "/rooms") => get(rooms::list),
        ("post", "/users/{user}/disconnect") => post(users::disconnect),
        ("get", "/stats") => get(stats::stats),
        other => unreachable!("no handler for {other:?}"),
    }
}

/// The API's routes, nested under [`PREFIX`], or `None` when no key is
/// configured (the API is off).
pub(crate) fn routes(app: &Arc<Node>) -> Option<Router<Arc<Node>>> {
    if !app.security.api.enabled() {
        return None;
    }
    let mut api = Router::new();
    for route in ROUTES {
        api = api.route(route.1, handler(route));
    }
    let api = api
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize))
        .route(SPEC_ROUTE.1, get(spec))
        .method_not_allowed_fallback(|| async {
            ApiError::api(ApiCode::MethodNotAllowed, "method not allowed on this route")
        })
        .fallback(|| async { ApiError::api(ApiCode::NotFound, "no such API route") })
        .layer(DefaultBodyLimit::max(MAX_BODY));
    Some(Router::new().nest(PREFIX, api))
}

async fn spec() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], SPEC).into_response()
}

/// Lets a request through only with a configured key within its budget.
async fn authorize(State(app): State<Arc<Node>>, request: Request, next: Next) -> Response {
    match app.security.api.admit(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(Denied::Unauthorized) => {
            ApiError::api(ApiCode::Unauthorized, "send Authorization: Bearer <API key>")
                .into_response()
        }
        Err(Denied::RateLimited) => {
            ApiError::protocol(ErrorCode::RateLimited, "too many requests for this key; slow down")
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use yaml_rust2::{Yaml, YamlLoader};

    use super::*;

    fn spec() -> Yaml {
        YamlLoader::load_from_str(SPEC).expect("the spec is YAML").remove(0)
    }

    #[test]
    fn every_route_is_in_the_spec_and_every_spec_path_is_routed() {
        let spec = spec();
        assert_eq!(spec["openapi"].as_str(), Some("3.1.0"));
        let mut documented = BTreeSet::new();
        for (path, item) in spec["paths"].as_hash().expect("paths") {
            for (method, _) in item.as_hash().expect("path item") {
                let path = path.as_str().expect("path").to_owned();
                documented.insert((method.as_str().expect("method").to_owned(), path));
            }
        }
        let routed: BTreeSet<(String, String)> = ROUTES
            .into_iter()
            .chain([SPEC_ROUTE])
            .map(|(method, path)| (method.to_owned(), format!("{PREFIX}{path}")))
            .collect();
        assert_eq!(routed, documented);
        for (method, path) in ROUTES {
            let operation = &spec["paths"][format!("{PREFIX}{path}").as_str()][method];
            assert!(!operation["responses"]["401"].is_badvalue(), "{method} {path} documents 401");
        }
    }

    #[test]
    fn every_error_code_the_api_sends_is_in_the_spec() {
        let spec = spec();
        let listed: BTreeSet<&str> =
            spec["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
                .as_vec()
                .expect("error code enum")
                .iter()
                .map(|code| code.as_str().expect("a string"))
                .collect();
        for code in &listed {
            let known = serde_json::from_value::<ErrorCode>(serde_json::json!(code)).is_ok()
                || ApiCode::ALL.iter().any(|c| c.as_str() == *code);
            assert!(known, "{code} in the spec is no error code");
        }
        let sent = [
            ErrorCode::BadJson,
            ErrorCode::MissingField,
            ErrorCode::InvalidField,
            ErrorCode::InvalidRoom,
            ErrorCode::InvalidId,
            ErrorCode::EmptyText,
            ErrorCode::TextTooLong,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ];
        for code in sent.iter().map(|c| c.as_str()).chain(ApiCode::ALL.iter().map(|c| c.as_str())) {
            assert!(listed.contains(code), "{code} is missing from the spec");
        }
    }
}
