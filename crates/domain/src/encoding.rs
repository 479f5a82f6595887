//! How times and golden ids are encoded: as text (RFC 3339, `G0000000042`) where the
//! encoding is read by people (JSON: the log, the change feed, the API's JSON), as
//! numbers in the store's binary encoding, where formatting and parsing text cost more
//! than the rest of a golden record.

use std::cell::Cell;
use std::fmt::Display;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

thread_local! {
    static TEXT_IN_BINARY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `decode` with times and golden ids read as text from binary encodings too, as
/// versions before projection format 5 wrote them (for stored values, such as the
/// outbox's, that are read rather than rebuilt).
pub fn with_text_in_binary<T>(decode: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            TEXT_IN_BINARY.with(|flag| flag.set(self.0));
        }
    }
    let _reset = Reset(TEXT_IN_BINARY.with(|flag| flag.replace(true)));
    decode()
}

/// Whether a value is to be read as text: from a human-readable encoding, or from an
/// earlier version's binary one.
fn reads_text(human_readable: bool) -> bool {
    human_readable || TEXT_IN_BINARY.with(Cell::get)
}

/// Serialises a value as its text where the encoding is human-readable, as `number`
/// otherwise.
pub(crate) fn text_or_number<S: Serializer, N: Serialize>(
    serializer: S,
    text: &impl Display,
    number: N,
) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.collect_str(text)
    } else {
        number.serialize(serializer)
    }
}

/// Reads what [`text_or_number`] wrote (or text, from an earlier version's binary
/// encoding: [`with_text_in_binary`]).
pub(crate) fn from_text_or_number<'de, D, T, N>(
    deserializer: D,
    from_number: impl FnOnce(N) -> T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<String, Error: Display>,
    N: Deserialize<'de>,
{
    if reads_text(deserializer.is_human_readable()) {
        T::try_from(String::deserialize(deserializer)?).map_err(D::Error::custom)
    } else {
        N::deserialize(deserializer).map(from_number)
    }
}
