//! The embedded web chat: static files compiled into the binary.

use axum::{
    Router,
    http::header,
    response::{Html, IntoResponse},
    routing::get,
};

const INDEX: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
/// palaver-client (`clients/js`), bundled by its `npm run bundle`; checked in, so
/// the build needs no Node.
const CLIENT_JS: &str = include_str!("../web/palaver-client.js");
const STYLE: &str = include_str!("../web/style.css");

/// Routes serving the web UI.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route(
            "/app.js",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS).into_response()
            }),
        )
        .route(
            "/palaver-client.js",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], CLIENT_JS)
                    .into_response()
            }),
        )
        .route(
            "/style.css",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
            }),
        )
}
