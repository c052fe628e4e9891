//! The API's error answer: an HTTP status and a JSON body `{code, message}`.
//!
//! `code` is one of the WebSocket protocol's stable error codes
//! (`docs/protocol.md`) where one fits — the same input is refused the same
//! way on both paths — plus a few that only HTTP needs ([`ApiCode`]).

use axum::{
    Json,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use palaver_broker::BrokerError;
use palaver_protocol::ErrorCode;
use serde::Serialize;

/// Error codes only the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiCode {
    /// 401: no valid API key.
    Unauthorized,
    /// 404: no such API route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 413: the body is over the limit.
    TooLarge,
    /// 400: a user name in the path breaks the user-name rules.
    InvalidUser,
}

impl ApiCode {
    /// Every API-only code, for the spec test.
    #[cfg(test)]
    pub(crate) const ALL: [ApiCode; 5] = [
        ApiCode::Unauthorized,
        ApiCode::NotFound,
        ApiCode::MethodNotAllowed,
        ApiCode::TooLarge,
        ApiCode::InvalidUser,
    ];

    /// The stable wire string.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ApiCode::Unauthorized => "unauthorized",
            ApiCode::NotFound => "not_found",
            ApiCode::MethodNotAllowed => "method_not_allowed",
            ApiCode::TooLarge => "too_large",
            ApiCode::InvalidUser => "invalid_user",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            ApiCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiCode::NotFound => StatusCode::NOT_FOUND,
            ApiCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiCode::InvalidUser => StatusCode::BAD_REQUEST,
        }
    }
}

/// A refused or failed API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// A refusal with a protocol error code; the status follows from it.
    pub(crate) fn protocol(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status: status_of(code), code: code.as_str(), message: message.into() }
    }

    /// A refusal with an API-only code.
    pub(crate) fn api(code: ApiCode, message: impl Into<String>) -> Self {
        ApiError { status: code.status(), code: code.as_str(), message: message.into() }
    }

    /// The HTTP status.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

/// The HTTP status of each protocol error code when the API answers with it.
pub(crate) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Unavailable(_) => ApiError::protocol(
                ErrorCode::Unavailable,
                "the cluster bus is unavailable; nothing was done, retry",
            ),
            BrokerError::Corrupt(_) => {
                ApiError::protocol(ErrorCode::Internal, "the store returned unreadable data")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(Body { code: self.code, message: &self.message });
        match self.status {
            StatusCode::UNAUTHORIZED => {
                (self.status, [(header::WWW_AUTHENTICATE, "Bearer realm=\"palaver-api\"")], body)
                    .into_response()
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                (self.status, [(header::RETRY_AFTER, "1")], body).into_response()
            }
            status => (status, body).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_codes() {
        assert_eq!(
            ApiError::protocol(ErrorCode::InvalidRoom, "x").status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::from(BrokerError::Unavailable("down".into())).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let response = ApiError::api(ApiCode::Unauthorized, "no").into_response();
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
