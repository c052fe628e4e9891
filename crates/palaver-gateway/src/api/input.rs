//! Reading what a caller sent — path segments, query strings, JSON bodies —
//! and refusing it with the WebSocket protocol's codes: the same mistake
//! gets the same `code` on both paths.

use axum::{
    body::Bytes,
    extract::{
        Path, Query,
        rejection::{BytesRejection, PathRejection, QueryRejection},
    },
    http::StatusCode,
};
use palaver_protocol::{ErrorCode, RoomName, UserName};
use serde::de::DeserializeOwned;

use super::error::{ApiCode, ApiError};

/// The room named in the path.
pub(crate) fn room(path: Result<Path<String>, PathRejection>) -> Result<RoomName, ApiError> {
    let Path(room) = path.map_err(|e| ApiError::protocol(ErrorCode::InvalidRoom, e.body_text()))?;
    RoomName::parse(&room)
        .map_err(|e| ApiError::protocol(ErrorCode::InvalidRoom, format!("room {e}")))
}

/// The user named in the path.
pub(crate) fn user(path: Result<Path<String>, PathRejection>) -> Result<UserName, ApiError> {
    let Path(user) = path.map_err(|e| ApiError::api(ApiCode::InvalidUser, e.body_text()))?;
    UserName::parse(&user).map_err(|e| ApiError::api(ApiCode::InvalidUser, format!("user {e}")))
}

/// A JSON body. An empty body reads as `{}` when `empty_is_object`.
pub(crate) fn json<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    empty_is_object: bool,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::api(ApiCode::TooLarge, e.body_text()),
        _ => ApiError::protocol(ErrorCode::BadJson, e.body_text()),
    })?;
    let body: &[u8] = if body.is_empty() && empty_is_object { b"{}" } else { &body };
    serde_json::from_slice(body).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => ErrorCode::InvalidField,
            _ => ErrorCode::BadJson,
        };
        ApiError::protocol(code, e.to_string())
    })
}

/// A query string's parameters; the last of repeated ones counts, unknown
/// ones are ignored (as unknown fields of a frame are).
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses the query string.
    pub(crate) fn new(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    ) -> Result<Self, ApiError> {
        let Query(pairs) =
            query.map_err(|e| ApiError::protocol(ErrorCode::InvalidField, e.body_text()))?;
        Ok(Params(pairs))
    }

    /// The value of `name`, if given.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// An unsigned 64-bit integer parameter.
    pub(crate) fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|value| {
                value.parse::<u64>().map_err(|_| {
                    ApiError::protocol(
                        ErrorCode::InvalidField,
                        format!("{name} must be an unsigned 64-bit integer"),
                    )
                })
            })
            .transpose()
    }

    /// A page size: `default` when absent, else within 1..=`max`.
    pub(crate) fn limit(&self, default: u32, max: u32) -> Result<u32, ApiError> {
        match self.number("limit")? {
            None => Ok(default),
            Some(limit) if (1..=u64::from(max)).contains(&limit) => Ok(limit as u32),
            Some(_) => Err(ApiError::protocol(
                ErrorCode::InvalidField,
                format!("limit must be between 1 and {max}"),
            )),
        }
    }
}
