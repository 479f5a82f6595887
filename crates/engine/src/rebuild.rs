//! Rebuild: replay the log into fresh projections, and verify that they equal the live
//! ones byte for byte. Decisions are replayed from the log, never re-decided.

use std::fmt;

use cmdm_domain::LogEntry;
use cmdm_store::{Store, TreeName};

use crate::projector::{Projector, Working};
use crate::{Engine, Result};

/// Entries replayed per storage transaction.
const REPLAY_BATCH: usize = 2_000;

/// One key whose value differs between the live and the rebuilt projections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub tree: &'static str,
    pub key: String,
    pub live: Option<String>,
    pub rebuilt: Option<String>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "<absent>".to_owned());
        write!(
            f,
            "tree `{}` key {}: live {} / rebuilt {}",
            self.tree,
            self.key,
            show(&self.live),
            show(&self.rebuilt)
        )
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Log entries replayed.
    pub entries: u64,
    /// Keys compared across all projection trees.
    pub keys_compared: u64,
    /// The first differences found (at most 20).
    pub differences: Vec<Difference>,
    /// How many keys differ in all.
    pub total_differences: u64,
}

impl VerifyReport {
    /// Whether the rebuilt projections equal the live ones.
    pub fn is_identical(&self) -> bool {
        self.total_differences == 0
    }
}

/// Replays the whole log of `engine` into `target`'s projection trees.
pub fn replay(engine: &Engine, target: &Store) -> Result<u64> {
    let live = engine.store();
    let projector = Projector {
        matcher: engine.matcher().as_ref(),
    };
    let mut entries = 0u64;
    let rules = &engine.config().survivorship;
    let mut work = Working::new(target.begin()?, rules, engine.matcher().as_ref());
    let mut in_batch = 0;
    for item in live.log() {
        let (seq, value) = item?;
        let entry = crate::decode_log(&value)?;
        match &entry {
            LogEntry::Event(event) => {
                let opened = crate::privacy::open_event(live, event, seq)?;
                let counted = opened
                    .counted
                    .then(|| crate::keys::first_event_hash(&event.source, &event.id));
                projector.event(
                    &mut work,
                    event,
                    opened.payload.as_ref(),
                    seq,
                    counted,
                    None,
                )?;
            }
            LogEntry::Decision(decision) => {
                projector.decision(&mut work, decision, seq)?;
            }
        }
        entries += 1;
        in_batch += 1;
        if in_batch == REPLAY_BATCH {
            work.finish()?.commit()?;
            work = Working::new(target.begin()?, rules, engine.matcher().as_ref());
            in_batch = 0;
        }
    }
    work.finish()?.commit()?;
    Ok(entries)
}

/// Replays the log into a temporary store and compares every projection tree.
pub fn verify(engine: &Engine) -> Result<VerifyReport> {
    let rebuilt = Store::temporary()?;
    let entries = replay(engine, &rebuilt)?;
    let mut report = VerifyReport {
        entries,
        ..VerifyReport::default()
    };
    for tree in TreeName::PROJECTIONS {
        compare(
            tree,
            &engine.store().tree(tree),
            &rebuilt.tree(tree),
            &mut report,
        )?;
    }
    Ok(report)
}

fn compare(
    tree: TreeName,
    live: &sled::Tree,
    rebuilt: &sled::Tree,
    report: &mut VerifyReport,
) -> Result<()> {
    let mut a = live.iter().peekable();
    let mut b = rebuilt.iter().peekable();
    loop {
        let next_a = a.peek().map(|r| r.as_ref().map(|(k, _)| k.clone()));
        let next_b = b.peek().map(|r| r.as_ref().map(|(k, _)| k.clone()));
        let (take_a, take_b) = match (next_a, next_b) {
            (None, None) => break,
            (Some(Err(_)), _) | (_, Some(Err(_))) => {
                let err = a
                    .next()
                    .and_then(Result::err)
                    .or_else(|| b.next().and_then(Result::err));
                return Err(cmdm_store::StoreError::from(err.unwrap_or(
                    sled::Error::ReportableBug("iteration error vanished".into()),
                ))
                .into());
            }
            (Some(Ok(ka)), Some(Ok(kb))) => (ka <= kb, kb <= ka),
            (Some(Ok(_)), None) => (true, false),
            (None, Some(Ok(_))) => (false, true),
        };
        let left = if take_a {
            a.next().and_then(Result::ok)
        } else {
            None
        };
        let right = if take_b {
            b.next().and_then(Result::ok)
        } else {
            None
        };
        report.keys_compared += 1;
        let same = matches!((&left, &right), (Some((_, va)), Some((_, vb))) if va == vb);
        if !same {
            report.total_differences += 1;
            if report.differences.len() < 20 {
                let key = left
                    .as_ref()
                    .or(right.as_ref())
                    .map(|(k, _)| show(k))
                    .unwrap_or_default();
                report.differences.push(Difference {
                    tree: tree.as_str(),
                    key,
                    live: left.map(|(_, v)| show(&v)),
                    rebuilt: right.map(|(_, v)| show(&v)),
                });
            }
        }
    }
    Ok(())
}

/// Printable form of a key or value: text where it is text, other bytes escaped.
fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(|c| c.is_control() && c != '\0') => text.replace('\0', "␀"),
        _ => bytes
            .iter()
            .map(|&b| match b {
                b' '..=b'~' if b != b'\\' => char::from(b).to_string(),
                _ => format!("\\x{b:02x}"),
            })
            .collect(),
    }
}

/// Replaces the live projections with ones replayed from the log. Run with the hub
/// stopped; the store's lock makes a second opener fail.
pub fn rebuild_in_place(engine: &Engine) -> Result<u64> {
    let rebuilt = Store::temporary()?;
    let entries = replay(engine, &rebuilt)?;
    for tree in TreeName::PROJECTIONS {
        engine.store().refill(tree, &rebuilt)?;
    }
    engine.store().flush_blocking()?;
    engine.forget_index()?;
    Ok(entries)
}

/// Version of the projections' encoding. A store whose projections were written with
/// another version (or none) is rebuilt from its log when opened. Version 5 stores times
/// and golden ids as numbers, no longer as text; version 6 keeps a source record's
/// entity and prepared form in its `records` value (`crate::held`), no longer in the
/// `membership` and `features` trees.
pub const PROJECTION_FORMAT: u64 = 6;
const FORMAT_KEY: &[u8] = b"projection_format";

/// Rebuilds the projections from the log if they were written in another format; returns
/// the entries replayed, or `None` when they were current.
pub fn ensure_projection_format(engine: &Engine) -> Result<Option<u64>> {
    let store = engine.store();
    let current = store
        .get(TreeName::Meta, FORMAT_KEY)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes);
    if current == Some(PROJECTION_FORMAT) {
        return Ok(None);
    }
    // Every store from before the version key holds its records in an older form.
    let replayed = if store.tree(TreeName::Log).is_empty() {
        0
    } else {
        rebuild_in_place(engine)?
    };
    store
        .tree(TreeName::Meta)
        .insert(FORMAT_KEY, &PROJECTION_FORMAT.to_be_bytes())
        .map_err(cmdm_store::StoreError::from)?;
    store.flush_blocking()?;
    Ok(Some(replayed))
}
