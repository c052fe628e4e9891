//! Size limits that validation enforces; the gateway fills them from its config.

/// Limits on what a client may send. Defaults match `docs/protocol.md`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Maximum characters (Unicode scalar values) in a message text.
    pub max_text_chars: usize,
    /// Maximum messages one `history` request may return.
    pub max_history: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_text_chars: 4000, max_history: 200 }
    }
}

/// Messages returned by `history` when the client gives no `limit`.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;

/// Members a `joined` frame lists at most; the rest are read with `members`.
pub const JOINED_MEMBERS: usize = 100;

/// Members returned by `members` when the client gives no `limit`.
pub const DEFAULT_MEMBERS_LIMIT: u32 = 100;

/// Most members one `members` request may return.
pub const MAX_MEMBERS_LIMIT: u32 = 1000;

/// Users each list of a `presence_batch` holds at most; changes beyond it
/// are only counted (the batch says `truncated`).
pub const PRESENCE_BATCH_NAMES: usize = 100;
