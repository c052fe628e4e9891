//! The room routes: publish a message, read history, list members, list
//! active rooms. Publishing takes the WebSocket `send` path (broker publish:
//! sequence, history, idempotency by (user, id), cluster fan-out, its own
//! trace), so members on every node receive it in order like any other.
//!
//! The API is trusted (it holds a key): private rooms are open to it.

use axum::{
    Json,
    body::Bytes,
    extract::{
        Path, Query, State,
        rejection::{BytesRejection, PathRejection, QueryRejection},
    },
};
use palaver_broker::Draft;
use palaver_protocol::{
    ClientMessageId, Epoch, ErrorCode, HistoryQuery, RoomName, Seq, StoredMessage, UserName,
    check_text, limits::DEFAULT_HISTORY_LIMIT,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::{
    error::{ApiCode, ApiError},
    input::{self, Params},
    state::Api,
};
use crate::identity::SYSTEM_USER;

/// Default and largest page of `members` and `rooms`.
const PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// `POST /rooms/{room}/messages` body; fields checked one by one so each
/// mistake gets its code.
#[derive(Deserialize)]
struct PublishRequest {
    text: Option<String>,
    id: Option<String>,
    user: Option<String>,
}

/// What a publish did.
#[derive(Debug, Serialize)]
pub(crate) struct PublishReply {
    epoch: Epoch,
    seq: Seq,
    duplicate: bool,
}

/// `POST /api/v1/rooms/{room}/messages`.
pub(crate) async fn publish(
    State(app): State<Api>,
    room: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishReply>, ApiError> {
    let room = input::room(room)?;
    let request: PublishRequest = input::json(body, false)?;
    let missing =
        |field: &str| ApiError::protocol(ErrorCode::MissingField, format!("missing \"{field}\""));
    let id = request.id.ok_or_else(|| missing("id"))?;
    let id = ClientMessageId::parse(&id)
        .map_err(|e| ApiError::protocol(ErrorCode::InvalidId, format!("id {e}")))?;
    let text = request.text.ok_or_else(|| missing("text"))?;
    let text = check_text(&text, &app.limits).map_err(|(code, m)| ApiError::protocol(code, m))?;
    let user = match request.user {
        Some(user) => UserName::parse(&user)
            .map_err(|e| ApiError::api(ApiCode::InvalidUser, format!("user {e}")))?,
        None => UserName::parse(SYSTEM_USER).expect("the system user is a valid name"),
    };
    // As for a WebSocket send: each message is its own trace, and the fan-out
    // on every node joins it.
    let span = tracing::info_span!(
        parent: None, "publish",
        room = %room, id = %id, session = "api", user = %user
    );
    let trace = crate::telemetry::traceparent(&span);
    // This node's own evidence for lost-write detection, as a WebSocket send has it.
    let witness = app.hub.witness(&room);
    let draft = Draft { id, user, text, trace, witness };
    let published = app.broker.publish(&room, draft).instrument(span).await?;
    Ok(Json(PublishReply {
        epoch: published.epoch,
        seq: published.seq,
        duplicate: published.duplicate,
    }))
}

/// A page of history, as the WebSocket `history` reply has it.
#[derive(Debug, Serialize)]
pub(crate) struct HistoryReply {
    room: RoomName,
    epoch: Epoch,
    messages: Vec<StoredMessage>,
    more: bool,
}

/// `GET /api/v1/rooms/{room}/history?before=|after=&limit=`.
pub(crate) async fn history(
    State(app): State<Api>,
    room: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<HistoryReply>, ApiError> {
    let room = input::room(room)?;
    let params = Params::new(query)?;
    let limit = params.limit(DEFAULT_HISTORY_LIMIT, app.limits.max_history)?;
    let query = match (params.number("before")?, params.number("after")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::protocol(
                ErrorCode::InvalidField,
                "give \"before\" or \"after\", not both",
            ));
        }
        (before, None) => HistoryQuery::Before { before, limit },
        (None, Some(after)) => HistoryQuery::After { after, limit },
    };
    let page = app.broker.history(&room, query, None).await?;
    Ok(Json(HistoryReply {
        room,
        epoch: page.head.epoch,
        messages: page.messages,
        more: page.more,
    }))
}

/// A page of a room's members.
#[derive(Debug, Serialize)]
pub(crate) struct MembersReply {
    room: RoomName,
    members: Vec<UserName>,
    more: bool,
    /// Users present on every node (the whole room, not this page).
    count: u64,
}

/// `GET /api/v1/rooms/{room}/members?after=&limit=`: users present on any
/// node, ascending, after the cursor `after` (a user name).
pub(crate) async fn members(
    State(app): State<Api>,
    room: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<MembersReply>, ApiError> {
    let room = input::room(room)?;
    let params = Params::new(query)?;
    let limit = params.limit(PAGE, MAX_PAGE)? as usize;
    let after = match params.get("after") {
        Some(after) => Some(UserName::parse(after).map_err(|e| {
            ApiError::protocol(ErrorCode::InvalidField, format!("after must be a user name: {e}"))
        })?),
        None => None,
    };
    let page = app.broker.members_page(&room, after.as_ref(), limit).await?;
    Ok(Json(MembersReply { room, members: page.members, more: page.more, count: page.count }))
}

/// One active room.
#[derive(Debug, Serialize)]
pub(crate) struct RoomEntry {
    room: RoomName,
    members: u64,
}

/// A page of active rooms.
#[derive(Debug, Serialize)]
pub(crate) struct RoomsReply {
    rooms: Vec<RoomEntry>,
    more: bool,
}

/// `GET /api/v1/rooms?after=&limit=`: rooms with members on any node,
/// ascending by name, with their cluster-wide member counts.
pub(crate) async fn list(
    State(app): State<Api>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<RoomsReply>, ApiError> {
    let params = Params::new(query)?;
    let limit = params.limit(PAGE, MAX_PAGE)? as usize;
    let after = match params.get("after") {
        Some(after) => Some(
            RoomName::parse(after)
                .map_err(|e| ApiError::protocol(ErrorCode::InvalidRoom, format!("after {e}")))?,
        ),
        None => None,
    };
    let page = app.broker.rooms(after.as_ref(), limit).await?;
    let rooms =
        page.rooms.into_iter().map(|r| RoomEntry { room: r.room, members: r.members }).collect();
    Ok(Json(RoomsReply { rooms, more: page.more }))
}
