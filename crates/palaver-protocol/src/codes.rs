//! Stable error codes (in `error` frames) and WebSocket close codes.
//!
//! Clients branch on these strings and numbers, so they never change meaning;
//! each one is listed in `docs/protocol.md`.

use serde::{Deserialize, Serialize};

/// Why a client request was refused. Sent as `error.code`; the connection stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON (syntax error, truncated, or nested too deep).
    BadJson,
    /// The frame is JSON but its `type` is missing or unknown.
    UnknownType,
    /// A field the frame type requires is absent.
    MissingField,
    /// A field has the wrong JSON type or is out of range.
    InvalidField,
    /// A binary frame was sent; the protocol is text only.
    BinaryNotSupported,
    /// The room name does not follow the naming rules.
    InvalidRoom,
    /// The message id does not follow the id rules.
    InvalidId,
    /// The text is empty after control characters are stripped.
    EmptyText,
    /// The text is longer than the configured maximum.
    TextTooLong,
    /// The action needs the room to be joined first.
    NotJoined,
    /// The connection already holds the maximum number of rooms.
    TooManyRooms,
    /// The room already holds its maximum number of members.
    RoomFull,
    /// Too many frames too fast; slow down and retry.
    RateLimited,
    /// The user may not join, read or post in this room.
    Forbidden,
    /// The cluster bus or history store is unreachable; retry the same request later.
    Unavailable,
    /// An unexpected server-side failure.
    Internal,
}

impl ErrorCode {
    /// Every error code, in declaration order: `ErrorCode::ALL[c as usize] == c`.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::MissingField,
        ErrorCode::InvalidField,
        ErrorCode::BinaryNotSupported,
        ErrorCode::InvalidRoom,
        ErrorCode::InvalidId,
        ErrorCode::EmptyText,
        ErrorCode::TextTooLong,
        ErrorCode::NotJoined,
        ErrorCode::TooManyRooms,
        ErrorCode::RoomFull,
        ErrorCode::RateLimited,
        ErrorCode::Forbidden,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// Whether retrying the same request later can succeed.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal)
    }

    /// The stable wire string of this code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::InvalidId => "invalid_id",
            ErrorCode::EmptyText => "empty_text",
            ErrorCode::TextTooLong => "text_too_long",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// WebSocket close codes the server uses, and what each means to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal close (the client asked, or the session ended cleanly).
    Normal,
    /// 1001: the node is shutting down; reconnect (to any node) and resume with `since`.
    GoingAway,
    /// 1002: the client broke the WebSocket protocol (bad framing, unmasked frame).
    ProtocolError,
    /// 1007: a text frame was not valid UTF-8.
    InvalidPayload,
    /// 1008: policy violation: sustained abuse (flooding) or a refused token.
    PolicyViolation,
    /// 1009: a frame exceeded the read limit.
    TooBig,
    /// 1011: unexpected server error.
    InternalError,
    /// 1013: slow consumer: the client's send queue overflowed; reconnect and resume with `since`.
    TryAgainLater,
    /// 4000: no frame (not even a pong) arrived within the read deadline.
    HeartbeatTimeout,
    /// 4001: authentication missing, invalid or expired.
    Unauthorized,
    /// 4002: an operator disconnected the user (server API); the default
    /// code of `POST /api/v1/users/{user}/disconnect`.
    Disconnected,
}

impl CloseCode {
    /// Every close code the server sends.
    pub const ALL: [CloseCode; 11] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::PolicyViolation,
        CloseCode::TooBig,
        CloseCode::InternalError,
        CloseCode::TryAgainLater,
        CloseCode::HeartbeatTimeout,
        CloseCode::Unauthorized,
        CloseCode::Disconnected,
    ];

    /// The close code with this number, if the server uses it.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The numeric code sent in the close frame.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::PolicyViolation => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::TryAgainLater => 1013,
            CloseCode::HeartbeatTimeout => 4000,
            CloseCode::Unauthorized => 4001,
            CloseCode::Disconnected => 4002,
        }
    }

    /// The short reason sent with the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "bye",
            CloseCode::GoingAway => "server shutting down",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::InvalidPayload => "invalid utf-8",
            CloseCode::PolicyViolation => "policy violation",
            CloseCode::TooBig => "frame too big",
            CloseCode::InternalError => "internal error",
            CloseCode::TryAgainLater => "slow consumer",
            CloseCode::HeartbeatTimeout => "heartbeat timeout",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Disconnected => "disconnected by the server",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_wire_strings_match_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("code serialises");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn error_code_list_is_every_code_in_order() {
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, i, "{code:?} out of place");
        }
        // A code added after `Internal` must be added to `ALL` (and this test).
        assert_eq!(ErrorCode::ALL.len(), ErrorCode::Internal as usize + 1);
    }

    #[test]
    fn retryable_codes() {
        assert!(ErrorCode::Unavailable.retryable());
        assert!(!ErrorCode::NotJoined.retryable());
    }
}
