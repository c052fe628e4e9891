//! The stamp every load message carries in its text: who sent it, its number,
//! and when.
//!
//! Text form: `<run>:<sender>:<n>:<unix_nanos>:<padding>`, `run` being 8 hex
//! digits that tell this run's messages from anyone else's. Both protocols
//! carry it unchanged (the palaver `text` field, or the whole raw frame), so
//! one parser serves both. Only ASCII letters, digits and `:` are used, so the
//! text never needs JSON escaping.

use std::fmt::Write;

/// The fields of a stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The run's tag.
    pub run: u32,
    /// Sender index within the run.
    pub sender: u32,
    /// The sender's message counter, from 1.
    pub n: u64,
    /// When the message was sent, in Unix nanoseconds.
    pub sent_nanos: u64,
}

/// Padding character; a letter, so it survives any text cleaning.
const PAD: char = 'x';

impl Stamp {
    /// Appends the stamp text to `out`, padded with `x` to `size` bytes (the
    /// header alone is longer than very small sizes; it is never cut).
    pub fn write(&self, out: &mut String, size: usize) {
        let start = out.len();
        // Writing to a String cannot fail.
        let _ = write!(out, "{:08x}:{}:{}:{}:", self.run, self.sender, self.n, self.sent_nanos);
        let written = out.len() - start;
        out.extend(std::iter::repeat_n(PAD, size.saturating_sub(written)));
    }

    /// Parses a stamp text; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Stamp> {
        let mut fields = text.splitn(5, ':');
        let run = fields.next()?;
        if run.len() != 8 {
            return None;
        }
        let run = u32::from_str_radix(run, 16).ok()?;
        let sender = fields.next()?.parse().ok()?;
        let n = fields.next()?.parse().ok()?;
        let sent_nanos = fields.next()?.parse().ok()?;
        fields.next()?;
        Some(Stamp { run, sender, n, sent_nanos })
    }
}

/// The longest stamp header, in bytes: smaller payloads still carry a whole header.
pub const MAX_HEADER_LEN: usize = 8 + 1 + 10 + 1 + 20 + 1 + 20 + 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let stamp = Stamp { run: 0xab, sender: 3, n: 17, sent_nanos: 1_700_000_000_123_456_789 };
        let mut text = String::new();
        stamp.write(&mut text, 100);
        assert_eq!(text.len(), 100);
        assert!(text.starts_with("000000ab:3:17:1700000000123456789:xx"));
        assert_eq!(Stamp::parse(&text), Some(stamp));
    }

    #[test]
    fn small_size_keeps_the_header() {
        let stamp = Stamp { run: 1, sender: 0, n: 1, sent_nanos: 5 };
        let mut text = String::from("prefix");
        stamp.write(&mut text, 4);
        assert_eq!(&text, "prefix00000001:0:1:5:");
        assert_eq!(Stamp::parse("00000001:0:1:5:"), Some(stamp));
    }

    #[test]
    fn rejects_other_texts() {
        for text in
            ["", "hello", "1:2:3:4:", "0000000g:1:2:3:", "00000001:1:2:3", "00000001:a:2:3:"]
        {
            assert_eq!(Stamp::parse(text), None, "{text}");
        }
    }

    #[test]
    fn header_bound_holds_for_extremes() {
        let stamp = Stamp { run: u32::MAX, sender: u32::MAX, n: u64::MAX, sent_nanos: u64::MAX };
        let mut text = String::new();
        stamp.write(&mut text, 0);
        assert_eq!(text.len(), MAX_HEADER_LEN);
    }
}
