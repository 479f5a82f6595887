//! CSV extracts from legacy systems: a column mapping onto hub attributes, rows read with
//! line numbers, unreadable rows reported rather than fatal.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use cmdm_domain::event::ProfilePatch;
use cmdm_domain::{InboundEvent, Payload, SourceKey, Timestamp};

/// Attribute → the columns it is made of (joined with a space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping(pub Vec<(String, Vec<String>)>);

impl Mapping {
    /// Parses `given_name=first,family_name=surname,address_line1=number+street`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut pairs = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((attribute, columns)) = item.split_once('=') else {
                bail!("mapping `{item}` must be attribute=column");
            };
            let columns: Vec<String> = columns
                .split('+')
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect();
            if columns.is_empty() {
                bail!("mapping `{item}` names no column");
            }
            pairs.push((attribute.trim().to_owned(), columns));
        }
        if pairs.is_empty() {
            bail!("the mapping is empty");
        }
        Ok(Mapping(pairs))
    }
}

/// The truth of an evaluation file: a column, optionally reduced by a regex's first group
/// (`rec_id:rec-(\d+)` makes `rec-12-dup-3` and `rec-12-org` one person).
#[derive(Debug, Clone)]
pub struct Truth {
    pub column: String,
    pub pattern: Option<regex::Regex>,
}

impl Truth {
    /// Parses `COLUMN` or `COLUMN:REGEX`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let (column, pattern) = match text.split_once(':') {
            Some((c, p)) => (c, Some(regex::Regex::new(p).context("truth pattern")?)),
            None => (text, None),
        };
        Ok(Truth {
            column: column.trim().to_owned(),
            pattern,
        })
    }

    fn label(&self, raw: &str) -> Option<String> {
        match &self.pattern {
            None => Some(raw.to_owned()),
            Some(re) => re.captures(raw).map(|c| {
                c.get(1)
                    .or_else(|| c.get(0))
                    .map_or("", |m| m.as_str())
                    .to_owned()
            }),
        }
    }
}

/// A readable row.
#[derive(Debug, Clone)]
pub struct Row {
    pub line: u64,
    pub subject: String,
    pub attributes: BTreeMap<String, String>,
    pub truth: Option<String>,
}

/// A row that could not be read.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub line: u64,
    pub reason: String,
}

/// About how many rows a CSV file holds: its size over the average length of the lines
/// in its first 64 KiB (a row whose quoted value spans lines counts as several). `None`
/// where the file cannot be read or has no whole line there.
pub fn estimate_rows(path: &Path) -> Option<usize> {
    use std::io::Read;
    let size = std::fs::metadata(path).ok()?.len();
    let mut sample = Vec::with_capacity(64 * 1024);
    std::fs::File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut sample)
        .ok()?;
    let whole = sample.iter().rposition(|&b| b == b'\n')? + 1;
    let lines = sample[..whole].iter().filter(|&&b| b == b'\n').count();
    let per_line = (whole / lines).max(1) as u64;
    // Less the header line.
    usize::try_from(size / per_line)
        .ok()
        .map(|n| n.saturating_sub(1))
}

/// Rows of a CSV file as `mapping` reads them; `id` names the record-id column (else the
/// line number is the id).
pub fn read(
    path: &Path,
    mapping: &Mapping,
    id: Option<&str>,
    truth: Option<&Truth>,
    progress: impl FnMut(u64),
) -> anyhow::Result<(Vec<Row>, Vec<Rejected>)> {
    let mut rows = Vec::new();
    let rejected = read_each(path, mapping, id, truth, progress, |row| {
        rows.push(row);
        Ok(())
    })?;
    Ok((rows, rejected))
}

/// Streams the rows of a CSV file to `on_row`, reporting the byte position to `progress`;
/// returns the rows that could not be read.
pub fn read_each(
    path: &Path,
    mapping: &Mapping,
    id: Option<&str>,
    truth: Option<&Truth>,
    mut progress: impl FnMut(u64),
    mut on_row: impl FnMut(Row) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Rejected>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_path(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let headers = reader
        .headers()
        .context("cannot read the header row")?
        .clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).with_context(|| {
            format!(
                "no column `{name}` in {}; it has: {}",
                path.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })
    };
    let mut columns = Vec::new();
    for (attribute, names) in &mapping.0 {
        let indexes = names
            .iter()
            .map(|n| column(n))
            .collect::<anyhow::Result<Vec<_>>>()?;
        columns.push((attribute.clone(), indexes));
    }
    let id_column = id.map(column).transpose()?;
    let truth_column = truth.map(|t| column(&t.column)).transpose()?;
    let mut rejected = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                rejected.push(Rejected {
                    line,
                    reason: e.to_string(),
                });
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        progress(reader.position().byte());
        let subject = match id_column {
            Some(i) => record.get(i).unwrap_or_default().to_owned(),
            None => line.to_string(),
        };
        if subject.is_empty() {
            rejected.push(Rejected {
                line,
                reason: "empty record id".to_owned(),
            });
            continue;
        }
        let mut attributes = BTreeMap::new();
        for (attribute, indexes) in &columns {
            let value = indexes
                .iter()
                .filter_map(|&i| record.get(i))
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            if !value.is_empty() {
                attributes.insert(attribute.clone(), value);
            }
        }
        let truth = match (truth, truth_column) {
            (Some(t), Some(i)) => t.label(record.get(i).unwrap_or_default()),
            _ => None,
        };
        on_row(Row {
            line,
            subject,
            attributes,
            truth,
        })?;
    }
    Ok(rejected)
}

impl Row {
    /// The row as a `profile.upserted` event from `source`, stamped `time`.
    pub fn event(&self, source: &str, time: Timestamp) -> anyhow::Result<InboundEvent> {
        let key = SourceKey::new(source, &self.subject)
            .with_context(|| format!("line {}: record id `{}`", self.line, self.subject))?;
        let patch = ProfilePatch(
            self.attributes
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect(),
        );
        Ok(InboundEvent {
            id: format!("csv-{}", self.subject),
            source: key.source.to_string(),
            subject: key.subject.to_string(),
            time,
            payload: Payload::Profile(patch),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_estimated_from_the_lines_at_the_start_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("people.csv");
        let mut text = String::from("id,given_name,family_name\n");
        for n in 0..20_000 {
            text.push_str(&format!("{n:06},ann,lee\n"));
        }
        std::fs::write(&path, &text).unwrap();
        let estimate = estimate_rows(&path).unwrap();
        assert!((19_000..=21_000).contains(&estimate), "{estimate}");
        // No whole line, or no file: no estimate.
        std::fs::write(&path, "id,given_name").unwrap();
        assert_eq!(estimate_rows(&path), None);
        assert_eq!(estimate_rows(&dir.path().join("missing.csv")), None);
    }

    #[test]
    fn reads_rows_reports_bad_ones_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("people.csv");
        std::fs::write(
            &path,
            "id, first, last, dob, cluster\n1, Ann, Lee, 1990-01-01, rec-1-org\n2, Bob\n3, Ann, Lea, 1990-01-01, rec-1-dup-0\n,X,Y,Z,rec-9\n",
        )
        .unwrap();
        let mapping =
            Mapping::parse("given_name=first,family_name=last,date_of_birth=dob").unwrap();
        let truth = Truth::parse(r"cluster:rec-(\d+)").unwrap();
        let (rows, rejected) = read(&path, &mapping, Some("id"), Some(&truth), |_| {}).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].attributes["family_name"], "Lea");
        assert_eq!(rows[0].truth.as_deref(), Some("1"));
        assert_eq!(rows[1].truth, rows[0].truth);
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0].line, 3);
        assert_eq!(rejected[1].line, 5);
        assert!(Mapping::parse("given_name").is_err());
        assert!(
            read(
                &path,
                &Mapping::parse("x=nope").unwrap(),
                None,
                None,
                |_| {}
            )
            .is_err()
        );
    }
}
