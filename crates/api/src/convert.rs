//! Conversions between the domain and the wire types of `cmdm.v1`, and the parsing of
//! request fields into domain values with errors that name the field.

use cmdm_domain::{
    FieldWeight, GoldenId, GoldenRecord, ReviewStatus, ReviewTask, SourceKey, SourceRecord,
};
use cmdm_engine::HistoryEntry;
use cmdm_matching::PairVerdict;

use crate::{ApiError, pb};

/// A golden id from a request field.
pub(crate) fn golden_id(field: &'static str, raw: &str) -> Result<GoldenId, ApiError> {
    if raw.trim().is_empty() {
        return Err(ApiError::invalid(
            field,
            "missing; a golden id looks like G0000000042",
        ));
    }
    raw.trim()
        .parse()
        .map_err(|e: cmdm_domain::DomainError| ApiError::invalid(field, e.to_string()))
}

/// A source key from a request field.
pub(crate) fn source_key(
    field: &'static str,
    key: Option<&pb::SourceKey>,
) -> Result<SourceKey, ApiError> {
    let key = key.ok_or_else(|| ApiError::invalid(field, "missing source and subject"))?;
    SourceKey::new(key.source.trim(), key.subject.trim())
        .map_err(|e| ApiError::invalid(field, e.to_string()))
}

pub(crate) fn weights_to_proto(fields: &[FieldWeight]) -> Vec<pb::FieldWeight> {
    fields
        .iter()
        .map(|f| pb::FieldWeight {
            field: f.field.clone(),
            level: f.level.clone(),
            weight: f.weight,
        })
        .collect()
}

pub(crate) fn history_to_proto(entry: &HistoryEntry) -> pb::HistoryEntry {
    pb::HistoryEntry {
        seq: entry.seq,
        time: entry.time.to_rfc3339(),
        kind: entry.kind.to_owned(),
        name: entry.name.clone(),
        by: entry.by.clone(),
        why: entry.why.clone(),
        detail_json: entry.detail.to_string(),
    }
}

pub(crate) fn comparison_to_proto(
    record: &SourceKey,
    other: &SourceKey,
    verdict: &PairVerdict,
) -> pb::Comparison {
    pb::Comparison {
        record: Some(key_to_proto(record)),
        other: Some(key_to_proto(other)),
        weight: verdict.explanation.weight,
        probability: verdict.explanation.probability,
        fields: weights_to_proto(&verdict.explanation.fields),
        contradict: verdict.contradict,
    }
}

pub(crate) fn task_to_proto(task: &ReviewTask) -> pb::ReviewTask {
    pb::ReviewTask {
        task_id: task.id,
        record: Some(key_to_proto(&task.record)),
        golden_id: task.entity.to_string(),
        probability: task.explanation.probability,
        weight: task.explanation.weight,
        fields: weights_to_proto(&task.explanation.fields),
        status: match task.status {
            ReviewStatus::Open => "open",
            ReviewStatus::Resolved => "resolved",
        }
        .to_owned(),
        resolution: task.resolution.as_ref().map(|r| pb::Resolution {
            action: r.action.clone(),
            by: r.by.clone(),
            comment: r.comment.clone(),
            at: r.at.to_rfc3339(),
            seq: r.seq,
        }),
    }
}

pub(crate) fn record_view(record: &SourceRecord, entity: Option<GoldenId>) -> pb::SourceRecordView {
    pb::SourceRecordView {
        key: Some(key_to_proto(&record.key)),
        attributes: record
            .live_attributes()
            .map(|(name, value, _)| (name.to_owned(), value.to_owned()))
            .collect(),
        golden_id: entity.map(|e| e.to_string()).unwrap_or_default(),
    }
}

pub(crate) fn key_to_proto(key: &SourceKey) -> pb::SourceKey {
    pb::SourceKey {
        source: key.source.to_string(),
        subject: key.subject.to_string(),
    }
}

fn value_to_proto(value: &cmdm_domain::GoldenValue) -> pb::GoldenValue {
    pb::GoldenValue {
        value: value.value.clone(),
        source: Some(key_to_proto(&value.source)),
        time: value.time.to_rfc3339(),
    }
}

/// The wire form of a golden record.
pub fn to_proto(record: &GoldenRecord) -> pb::GoldenRecord {
    pb::GoldenRecord {
        golden_id: record.id.to_string(),
        attributes: record
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), value_to_proto(v)))
            .collect(),
        consents: record
            .consents
            .iter()
            .map(|(k, c)| {
                let status = match c.status {
                    cmdm_domain::ConsentStatus::Granted => "granted",
                    cmdm_domain::ConsentStatus::Denied => "denied",
                    cmdm_domain::ConsentStatus::Withdrawn => "withdrawn",
                };
                let evidence = |field: fn(&cmdm_domain::Evidence) -> Option<String>| {
                    c.evidence.as_ref().and_then(field).unwrap_or_default()
                };
                let consent = pb::Consent {
                    purpose: c.purpose.clone(),
                    channel: c.channel.as_str().to_owned(),
                    status: status.to_owned(),
                    legal_basis: c.legal_basis.clone().unwrap_or_default(),
                    expires_at: c.expires_at.clone().unwrap_or_default(),
                    source: Some(key_to_proto(&c.source)),
                    time: c.time.to_rfc3339(),
                    collection_point: evidence(|e| e.collection_point.clone()),
                    text_version: evidence(|e| e.text_version.clone()),
                    captured_by: evidence(|e| e.captured_by.clone()),
                };
                (k.clone(), consent)
            })
            .collect(),
        preferences: record
            .preferences
            .iter()
            .map(|(k, v)| (k.clone(), value_to_proto(v)))
            .collect(),
        members: record.members.iter().map(key_to_proto).collect(),
        merged_ids: record.merged_ids.iter().map(ToString::to_string).collect(),
        version: record.version,
    }
}
