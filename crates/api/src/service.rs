//! The `cmdm.v1.CustomerHub` service: each RPC checks the caller's role, parses its
//! request, runs the engine off the async threads, and converts the answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use cmdm_domain::{InboundEvent, Timestamp};
use cmdm_engine::{
    AsOf, ContactTarget, Engine, SearchQuery, StewardAction, StewardOutcome, StewardRequest,
};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::auth::{Auth, Role, require};
use crate::convert::{
    comparison_to_proto, golden_id, history_to_proto, key_to_proto, record_view, source_key,
    task_to_proto, to_proto, weights_to_proto,
};
use crate::{ApiError, CustomerHubServer, pb};

/// Most hits or tasks per page.
const MAX_PAGE: usize = 100;
/// Most events per publish request.
const MAX_PUBLISH: usize = 1000;
/// Most ids per contact batch, and verdicts per streamed chunk.
const MAX_CONTACT_BATCH: usize = 100_000;
const CONTACT_CHUNK: usize = 5_000;

/// The `cmdm.v1.CustomerHub` service.
#[derive(Clone)]
pub struct HubService {
    engine: Arc<Engine>,
}

impl HubService {
    /// A service over the engine.
    pub fn new(engine: Arc<Engine>) -> Self {
        HubService { engine }
    }

    /// The service wrapped for a tonic router, every request checked by `auth`.
    pub fn into_server(self, auth: Auth) -> InterceptedService<CustomerHubServer<Self>, Auth> {
        InterceptedService::new(CustomerHubServer::new(self), auth)
    }

    /// Runs a short read on the calling thread: one or two store lookups that never wait
    /// for a lock, cheaper than a hop to the blocking pool.
    fn read<T>(&self, work: impl FnOnce(&Engine) -> Result<T, ApiError>) -> Result<T, Status> {
        work(&self.engine).map_err(ApiError::into_status)
    }

    /// A steward's decision: the action (resolved against the engine), logged under the
    /// caller's name with the comment, answered with the entities as it left them.
    async fn decide(
        &self,
        who: crate::Identity,
        comment: String,
        task: Option<u64>,
        action: impl FnOnce(&Engine) -> Result<StewardAction, ApiError> + Send + 'static,
    ) -> Result<Response<pb::StewardResponse>, Status> {
        let response = self
            .run(move |engine| {
                let outcome = engine.steward(StewardRequest {
                    action: action(engine)?,
                    by: who.name,
                    comment,
                    task,
                })?;
                steward_response(engine, outcome)
            })
            .await?;
        Ok(Response::new(response))
    }

    /// Runs engine work on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, Status> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || work(&engine))
            .await
            .map_err(|e| Status::internal(format!("request task failed: {e}")))?
            .map_err(ApiError::into_status)
    }
}

fn page(token: &str, size: u32, default: usize) -> Result<(usize, usize), ApiError> {
    let offset = if token.is_empty() {
        0
    } else {
        token
            .parse()
            .map_err(|_| ApiError::invalid("page_token", "not a token from a previous response"))?
    };
    let size = match size {
        0 => default,
        n => (n as usize).min(MAX_PAGE),
    };
    Ok((offset, size))
}

fn next_token(offset: usize, shown: usize, total: usize) -> String {
    if offset + shown < total {
        (offset + shown).to_string()
    } else {
        String::new()
    }
}

fn optional_id(field: &'static str, raw: &str) -> Result<Option<cmdm_domain::GoldenId>, ApiError> {
    if raw.trim().is_empty() {
        Ok(None)
    } else {
        golden_id(field, raw).map(Some)
    }
}

/// A contact question from its message.
fn question(q: Option<pb::ContactQuestion>) -> Result<cmdm_domain::ContactQuestion, ApiError> {
    let q = q.ok_or_else(|| ApiError::invalid("question", "required"))?;
    let channel = serde_json::from_value::<cmdm_domain::Channel>(serde_json::Value::String(
        q.channel.trim().to_ascii_lowercase(),
    ))
    .map_err(|_| {
        ApiError::invalid(
            "question.channel",
            format!("`{}` is not email, sms, phone, mail or push", q.channel),
        )
    })?;
    if q.purpose.trim().is_empty() {
        return Err(ApiError::invalid("question.purpose", "required"));
    }
    let at = if q.at.trim().is_empty() {
        Timestamp::now()
    } else {
        Timestamp::parse_rfc3339("question.at", &q.at)
            .map_err(|e| ApiError::invalid("question.at", e.to_string()))?
    };
    Ok(cmdm_domain::ContactQuestion {
        channel,
        purpose: q.purpose.trim().to_owned(),
        topic: Some(q.topic.trim().to_owned()).filter(|t| !t.is_empty()),
        at,
    })
}

fn reasons_to_proto(d: &cmdm_domain::ContactDecision) -> Vec<pb::ContactReason> {
    d.reasons
        .iter()
        .map(|r| pb::ContactReason {
            code: r.code.to_owned(),
            blocks: r.blocks,
            detail: r.detail.clone(),
        })
        .collect()
}

fn task_id(raw: u64) -> Option<u64> {
    (raw != 0).then_some(raw)
}

/// The two entities of a merge or keep-apart: given, or those of the task.
fn pair(
    engine: &Engine,
    a: &str,
    b: &str,
    task: Option<u64>,
) -> Result<(cmdm_domain::GoldenId, cmdm_domain::GoldenId), ApiError> {
    match (
        optional_id("golden_id", a)?,
        optional_id("other_golden_id", b)?,
        task,
    ) {
        (Some(a), Some(b), _) => Ok((a, b)),
        (None, None, Some(task)) => {
            let review = engine
                .task(task)?
                .ok_or_else(|| ApiError::NotFound(format!("no review task {task}")))?;
            let own = engine.entity_of(&review.record)?.ok_or_else(|| {
                ApiError::Engine(cmdm_engine::EngineError::Refused(format!(
                    "task {task}: its record {} belongs to no entity any more",
                    review.record
                )))
            })?;
            Ok((own, review.entity))
        }
        (None, _, _) => Err(ApiError::invalid(
            "golden_id",
            "missing; name two golden ids, or a task_id alone",
        )),
        (_, None, _) => Err(ApiError::invalid(
            "other_golden_id",
            "missing; name two golden ids, or a task_id alone",
        )),
    }
}

fn steward_response(
    engine: &Engine,
    outcome: StewardOutcome,
) -> Result<pb::StewardResponse, ApiError> {
    use cmdm_domain::Decision;
    let ids = match &outcome.decision {
        Decision::StewardMerged { survivor, .. } => vec![*survivor],
        Decision::KeptApart { entity, other, .. } => vec![*entity, *other],
        Decision::RecordSplit { from, to, .. } => vec![*from, *to],
        Decision::StewardLinked { entity, .. } => vec![*entity],
        _ => Vec::new(),
    };
    let mut records = Vec::new();
    for id in ids {
        if let Some(found) = engine.golden(id)? {
            records.push(to_proto(&found.record));
        }
    }
    Ok(pb::StewardResponse {
        seq: outcome.seq,
        decision: outcome.decision.name().to_owned(),
        records,
        redirected: outcome
            .redirected
            .iter()
            .map(|(from, to)| format!("{from}->{to}"))
            .collect(),
    })
}

#[tonic::async_trait]
impl pb::customer_hub_server::CustomerHub for HubService {
    async fn get_golden_record(
        &self,
        request: Request<pb::GetGoldenRecordRequest>,
    ) -> Result<Response<pb::GetGoldenRecordResponse>, Status> {
        require(&request, Role::Spoke, "read golden records")?;
        let request = request.into_inner();
        let id = golden_id("golden_id", &request.golden_id)?;
        let as_of = match (request.as_of_time.trim(), request.as_of_seq) {
            ("", 0) => None,
            ("", seq) => Some(AsOf::Seq(seq)),
            (time, 0) => Some(AsOf::Time(
                Timestamp::parse_rfc3339("as_of_time", time)
                    .map_err(|e| ApiError::invalid("as_of_time", e.to_string()))?,
            )),
            _ => {
                return Err(ApiError::invalid(
                    "as_of_seq",
                    "give as_of_time or as_of_seq, not both",
                )
                .into());
            }
        };
        let Some(at) = as_of else {
            let found = self.read(|engine| {
                engine
                    .golden(id)?
                    .ok_or_else(|| ApiError::NotFound(format!("no golden record {id}")))
            })?;
            return Ok(Response::new(pb::GetGoldenRecordResponse {
                record: Some(to_proto(&found.record)),
                redirected_from: found
                    .redirected_from
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
            }));
        };
        let response = self
            .run(move |engine| {
                let record = engine.golden_as_of(id, at)?.ok_or_else(|| {
                    ApiError::NotFound(format!("golden record {id} did not exist at that moment"))
                })?;
                Ok(pb::GetGoldenRecordResponse {
                    redirected_from: if record.id != id {
                        id.to_string()
                    } else {
                        String::new()
                    },
                    record: Some(to_proto(&record)),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn lookup_by_source_key(
        &self,
        request: Request<pb::LookupBySourceKeyRequest>,
    ) -> Result<Response<pb::LookupBySourceKeyResponse>, Status> {
        require(&request, Role::Spoke, "look up golden records")?;
        let request = request.into_inner();
        let key = cmdm_domain::SourceKey::new(request.source.trim(), request.subject.trim())
            .map_err(|e| {
                let field = if e.to_string().contains("subject") {
                    "subject"
                } else {
                    "source"
                };
                ApiError::invalid(field, e.to_string())
            })?;
        let record = self.read(|engine| {
            engine.lookup(&key)?.ok_or_else(|| {
                ApiError::NotFound(format!("no golden record holds source record {key}"))
            })
        })?;
        Ok(Response::new(pb::LookupBySourceKeyResponse {
            record: Some(to_proto(&record)),
        }))
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        require(&request, Role::Spoke, "search")?;
        let r = request.into_inner();
        let mut attributes: BTreeMap<String, String> = r.attributes.into_iter().collect();
        for (name, value) in [
            ("full_name", r.full_name),
            ("given_name", r.given_name),
            ("family_name", r.family_name),
            ("email", r.email),
            ("phone", r.phone),
            ("postcode", r.postcode),
            ("date_of_birth", r.date_of_birth),
        ] {
            if !value.trim().is_empty() {
                attributes.insert(name.to_owned(), value.trim().to_owned());
            }
        }
        attributes.retain(|_, v| !v.trim().is_empty());
        if attributes.is_empty() {
            return Err(ApiError::invalid(
                "full_name",
                "give at least one of name, e-mail, phone, postcode or date of birth",
            )
            .into());
        }
        let (offset, size) = page(&r.page_token, r.page_size, 10)?;
        let response = self
            .run(move |engine| {
                let (hits, total) = engine.search(&SearchQuery { attributes }, offset, size)?;
                Ok(pb::SearchResponse {
                    next_page_token: next_token(offset, hits.len(), total),
                    total: total as u32,
                    hits: hits
                        .iter()
                        .map(|h| pb::SearchHit {
                            record: Some(to_proto(&h.record)),
                            probability: h.probability,
                            weight: h.weight,
                            member: Some(key_to_proto(&h.member)),
                            matched: weights_to_proto(&h.matched),
                        })
                        .collect(),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        require(&request, Role::Spoke, "read history")?;
        let r = request.into_inner();
        let target = match (r.golden_id.trim(), r.record.as_ref()) {
            ("", None) => {
                return Err(ApiError::invalid("golden_id", "give a golden id or a record").into());
            }
            ("", Some(_)) => Err(source_key("record", r.record.as_ref())?),
            (id, _) => Ok(golden_id("golden_id", id)?),
        };
        let response = self
            .run(move |engine| {
                let (id, entries) = match target {
                    Ok(id) => {
                        let (id, entries) = engine.history(id)?;
                        (id.to_string(), entries)
                    }
                    Err(key) => (String::new(), engine.record_history(&key)?),
                };
                Ok(pb::GetHistoryResponse {
                    golden_id: id,
                    entries: entries.iter().map(history_to_proto).collect(),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        require(&request, Role::Spoke, "read explanations")?;
        let r = request.into_inner();
        let record = source_key("record", r.record.as_ref())?;
        let other = r
            .other
            .as_ref()
            .map(|o| source_key("other", Some(o)))
            .transpose()?;
        let response = self
            .run(move |engine| {
                let Some(other) = other else {
                    let e = engine.explain_record(&record)?;
                    let (link, review) = e
                        .members
                        .first()
                        .map(|(_, v)| (v.link, v.review))
                        .unwrap_or_default();
                    return Ok(pb::ExplainResponse {
                        golden_id: e.entity.map(|g| g.to_string()).unwrap_or_default(),
                        other_golden_id: String::new(),
                        placed_by: e.placed_by.as_ref().map(history_to_proto),
                        comparisons: e
                            .members
                            .iter()
                            .map(|(k, v)| comparison_to_proto(&record, k, v))
                            .collect(),
                        link_threshold: link,
                        review_threshold: review,
                        kept_apart_seq: 0,
                        summary: match (&e.entity, &e.placed_by) {
                            (Some(g), Some(p)) => format!(
                                "{record} belongs to {g} by {} (log entry {}, {}): {}",
                                p.name, p.seq, p.by, p.why
                            ),
                            (Some(g), None) => format!("{record} belongs to {g}"),
                            (None, _) => format!("{record} belongs to no entity"),
                        },
                    });
                };
                let e = engine.explain_pair(&record, &other)?;
                Ok(pb::ExplainResponse {
                    golden_id: e.entity_a.map(|g| g.to_string()).unwrap_or_default(),
                    other_golden_id: e.entity_b.map(|g| g.to_string()).unwrap_or_default(),
                    placed_by: None,
                    comparisons: vec![comparison_to_proto(&e.a, &e.b, &e.verdict)],
                    link_threshold: e.verdict.link,
                    review_threshold: e.verdict.review,
                    kept_apart_seq: e.kept_apart.unwrap_or(0),
                    summary: e.summary,
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        require(&request, Role::Steward, "list review tasks")?;
        let r = request.into_inner();
        let status = match r.status.trim() {
            "" | "open" => Some(cmdm_domain::ReviewStatus::Open),
            "resolved" => Some(cmdm_domain::ReviewStatus::Resolved),
            "all" => None,
            other => {
                return Err(ApiError::invalid(
                    "status",
                    format!("`{other}` is not open, resolved or all"),
                )
                .into());
            }
        };
        let order = r.order_by.trim().to_owned();
        if !matches!(order.as_str(), "" | "age" | "newest" | "score") {
            return Err(ApiError::invalid(
                "order_by",
                format!("`{order}` is not age, newest or score"),
            )
            .into());
        }
        let (offset, size) = page(&r.page_token, r.page_size, 20)?;
        let response = self
            .run(move |engine| {
                let mut tasks: Vec<_> = engine
                    .tasks()?
                    .into_iter()
                    .filter(|t| status.is_none_or(|s| t.status == s))
                    .collect();
                match order.as_str() {
                    "score" => tasks.sort_by(|a, b| {
                        b.explanation
                            .weight
                            .total_cmp(&a.explanation.weight)
                            .then(a.id.cmp(&b.id))
                    }),
                    "newest" => tasks.reverse(),
                    _ => {}
                }
                let total = tasks.len();
                let shown: Vec<_> = tasks.iter().skip(offset).take(size).collect();
                Ok(pb::ListTasksResponse {
                    next_page_token: next_token(offset, shown.len(), total),
                    total: total as u32,
                    tasks: shown.into_iter().map(task_to_proto).collect(),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        require(&request, Role::Steward, "read review tasks")?;
        let id = request.into_inner().task_id;
        if id == 0 {
            return Err(ApiError::invalid("task_id", "missing").into());
        }
        let response = self
            .run(move |engine| {
                let task = engine
                    .task(id)?
                    .ok_or_else(|| ApiError::NotFound(format!("no review task {id}")))?;
                let record = engine.source_record(&task.record)?;
                let entity = engine.golden(task.entity)?.map(|l| l.record);
                let mut entity_records = Vec::new();
                let mut comparisons = Vec::new();
                for member in entity.iter().flat_map(|g| &g.members) {
                    if let Some(r) = engine.source_record(member)? {
                        entity_records.push(record_view(&r, entity.as_ref().map(|g| g.id)));
                    }
                    let pair = engine.explain_pair(&task.record, member)?;
                    comparisons.push(comparison_to_proto(&task.record, member, &pair.verdict));
                }
                Ok(pb::GetTaskResponse {
                    task: Some(task_to_proto(&task)),
                    record: match &record {
                        Some(r) => Some(record_view(r, engine.entity_of(&task.record)?)),
                        None => None,
                    },
                    entity: entity.as_ref().map(to_proto),
                    entity_records,
                    comparisons,
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn merge(
        &self,
        request: Request<pb::MergeRequest>,
    ) -> Result<Response<pb::StewardResponse>, Status> {
        let who = require(&request, Role::Steward, "merge entities")?;
        let r = request.into_inner();
        let task = task_id(r.task_id);
        self.decide(who, r.comment, task, move |engine| {
            let (entity, other) = pair(engine, &r.golden_id, &r.other_golden_id, task)?;
            Ok(StewardAction::Merge { entity, other })
        })
        .await
    }

    async fn keep_apart(
        &self,
        request: Request<pb::KeepApartRequest>,
    ) -> Result<Response<pb::StewardResponse>, Status> {
        let who = require(&request, Role::Steward, "keep entities apart")?;
        let r = request.into_inner();
        let task = task_id(r.task_id);
        self.decide(who, r.comment, task, move |engine| {
            let (entity, other) = pair(engine, &r.golden_id, &r.other_golden_id, task)?;
            Ok(StewardAction::KeepApart { entity, other })
        })
        .await
    }

    async fn split(
        &self,
        request: Request<pb::SplitRequest>,
    ) -> Result<Response<pb::StewardResponse>, Status> {
        let who = require(&request, Role::Steward, "split records out")?;
        let r = request.into_inner();
        let record = source_key("record", r.record.as_ref())?;
        self.decide(who, r.comment, task_id(r.task_id), move |_| {
            Ok(StewardAction::Split { record })
        })
        .await
    }

    async fn link(
        &self,
        request: Request<pb::LinkRequest>,
    ) -> Result<Response<pb::StewardResponse>, Status> {
        let who = require(&request, Role::Steward, "link records")?;
        let r = request.into_inner();
        let record = source_key("record", r.record.as_ref())?;
        let entity = golden_id("golden_id", &r.golden_id)?;
        self.decide(who, r.comment, task_id(r.task_id), move |_| {
            Ok(StewardAction::Link { record, entity })
        })
        .await
    }

    async fn rematch(
        &self,
        request: Request<pb::RematchRequest>,
    ) -> Result<Response<pb::RematchResponse>, Status> {
        require(&request, Role::Admin, "re-match every record")?;
        let report = self.run(|engine| Ok(engine.rematch(500)?)).await?;
        Ok(Response::new(pb::RematchResponse {
            linked: report.linked as u32,
            merged: report.merged as u32,
            review_tasks: report.review_tasks as u32,
            created: report.created as u32,
        }))
    }

    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        require(&request, Role::Spoke, "publish events")?;
        let events = request.into_inner().events;
        if events.len() > MAX_PUBLISH {
            return Err(ApiError::invalid(
                "events",
                format!("{} events; at most {MAX_PUBLISH} per request", events.len()),
            )
            .into());
        }
        let mut accepted = Vec::new();
        let mut positions = Vec::new();
        let mut rejected = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let data = if e.data_json.trim().is_empty() {
                Ok(None)
            } else {
                serde_json::from_str::<serde_json::Value>(&e.data_json)
                    .map(Some)
                    .map_err(|err| format!("data_json is not JSON: {err}"))
            };
            let event = data.and_then(|data| {
                let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
                InboundEvent::from_parts(
                    opt(&e.id).as_deref(),
                    opt(&e.source).as_deref(),
                    opt(&e.r#type).as_deref(),
                    opt(&e.subject).as_deref(),
                    opt(&e.time).as_deref(),
                    data.as_ref(),
                )
                .map_err(|err| err.to_string())
            });
            match event {
                Ok(event) => {
                    accepted.push(event);
                    positions.push(i as u32);
                }
                Err(reason) => rejected.push(pb::Rejected {
                    index: i as u32,
                    reason,
                }),
            }
        }
        let report = self
            .run(move |engine| {
                let report = engine.apply_batch(&accepted, &[])?;
                engine
                    .store()
                    .flush_blocking()
                    .map_err(cmdm_engine::EngineError::from)?;
                Ok(report)
            })
            .await?;
        rejected.extend(report.refused.iter().map(|(at, reason)| pb::Rejected {
            index: positions[*at],
            reason: reason.clone(),
        }));
        rejected.sort_by_key(|r| r.index);
        Ok(Response::new(pb::PublishResponse {
            applied: report.applied as u32,
            duplicates: report.duplicates as u32,
            rejected,
        }))
    }

    async fn check_contact(
        &self,
        request: Request<pb::CheckContactRequest>,
    ) -> Result<Response<pb::CheckContactResponse>, Status> {
        require(&request, Role::Spoke, "check contacts")?;
        let r = request.into_inner();
        let question = question(r.question)?;
        let by_id = matches!(
            r.target,
            Some(pb::check_contact_request::Target::GoldenId(_))
        );
        let target = match r.target {
            Some(pb::check_contact_request::Target::GoldenId(id)) => {
                ContactTarget::Entity(golden_id("golden_id", &id)?)
            }
            Some(pb::check_contact_request::Target::ContactPoint(point))
                if !point.trim().is_empty() =>
            {
                ContactTarget::ContactPoint(point)
            }
            _ => {
                return Err(ApiError::invalid("target", "give golden_id or contact_point").into());
            }
        };
        // An entity check reads a handful of keys; a contact point waits for the index.
        let decide = move |engine: &Engine| Ok(engine.check_contact(&target, &question)?);
        let decision = if by_id {
            self.read(decide)?
        } else {
            self.run(decide).await?
        };
        Ok(Response::new(pb::CheckContactResponse {
            allowed: decision.allowed,
            reasons: reasons_to_proto(&decision),
        }))
    }

    type CheckContactBatchStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::CheckContactBatchResponse, Status>> + Send>,
    >;

    async fn check_contact_batch(
        &self,
        request: Request<pb::CheckContactBatchRequest>,
    ) -> Result<Response<Self::CheckContactBatchStream>, Status> {
        require(&request, Role::Spoke, "check contacts")?;
        let r = request.into_inner();
        if r.golden_ids.len() > MAX_CONTACT_BATCH {
            return Err(ApiError::invalid(
                "golden_ids",
                format!(
                    "{} ids; at most {MAX_CONTACT_BATCH} per request",
                    r.golden_ids.len()
                ),
            )
            .into());
        }
        let question = question(r.question)?;
        let ids = r
            .golden_ids
            .iter()
            .map(|raw| golden_id("golden_ids", raw))
            .collect::<Result<Vec<_>, _>>()?;
        let raw_ids = r.golden_ids;
        let verdicts = self
            .run(move |engine| {
                let answers = engine.check_contacts(&ids, &question);
                Ok(raw_ids
                    .into_iter()
                    .zip(answers)
                    .map(|(golden_id, answer)| match answer {
                        Ok(d) => pb::ContactVerdict {
                            golden_id,
                            allowed: d.allowed,
                            blocked_by: d
                                .reasons
                                .iter()
                                .filter(|r| r.blocks)
                                .map(|r| r.code.to_owned())
                                .collect(),
                            error: String::new(),
                        },
                        Err(e) => pb::ContactVerdict {
                            golden_id,
                            allowed: false,
                            blocked_by: Vec::new(),
                            error: e.to_string(),
                        },
                    })
                    .collect::<Vec<_>>())
            })
            .await?;
        let chunks: Vec<Result<pb::CheckContactBatchResponse, Status>> = verdicts
            .chunks(CONTACT_CHUNK)
            .map(|chunk| {
                Ok(pb::CheckContactBatchResponse {
                    verdicts: chunk.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn erase(
        &self,
        request: Request<pb::EraseRequest>,
    ) -> Result<Response<pb::EraseResponse>, Status> {
        let who = require(&request, Role::Admin, "erase persons")?;
        let r = request.into_inner();
        let id = golden_id("golden_id", &r.golden_id)?;
        if r.comment.trim().is_empty() {
            return Err(ApiError::invalid(
                "comment",
                "say why (the request's reference): it is logged with the erasure",
            )
            .into());
        }
        let report = self
            .run(move |engine| Ok(engine.erase(id, &who.name, &r.comment)?))
            .await?;
        Ok(Response::new(pb::EraseResponse {
            golden_id: report.entity.to_string(),
            merged_ids: report.merged_ids.iter().map(ToString::to_string).collect(),
            records: report.records.iter().map(key_to_proto).collect(),
            contact_points: report.contact_points as u32,
            seq: report.seq,
            bytes_before: report.purge.map_or(0, |p| p.bytes_before),
            bytes_after: report.purge.map_or(0, |p| p.bytes_after),
            purge_due: report.purge_due.map(|t| t.to_rfc3339()).unwrap_or_default(),
        }))
    }

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<pb::ExportResponse>, Status> {
        require(
            &request,
            Role::Steward,
            "export what is held about a person",
        )?;
        let id = golden_id("golden_id", &request.into_inner().golden_id)?;
        let export = self.run(move |engine| Ok(engine.export(id)?)).await?;
        let json = serde_json::to_string_pretty(&export)
            .map_err(|e| Status::internal(format!("cannot encode the export: {e}")))?;
        Ok(Response::new(pb::ExportResponse {
            golden_id: export.golden_id.to_string(),
            json,
        }))
    }

    async fn consent_report(
        &self,
        request: Request<pb::ConsentReportRequest>,
    ) -> Result<Response<pb::ConsentReportResponse>, Status> {
        require(&request, Role::Steward, "read consent reports")?;
        let report = self.run(|engine| Ok(engine.consent_report()?)).await?;
        Ok(Response::new(pb::ConsentReportResponse {
            periods: report
                .periods
                .into_iter()
                .map(|p| pb::ConsentPeriod {
                    period: p.period,
                    purpose: p.purpose,
                    channel: p.channel,
                    granted: p.granted,
                    denied: p.denied,
                    withdrawn: p.withdrawn,
                })
                .collect(),
            migrations: report
                .migrations
                .into_iter()
                .map(|m| pb::ChannelMigration {
                    purpose: m.purpose,
                    from_channel: m.from,
                    to_channel: m.to,
                    customers: m.customers,
                })
                .collect(),
            customers: report.customers,
            customers_with_opt_out: report.customers_with_opt_out,
            atomic_opt_outs_avoided: report.atomic_opt_outs_avoided,
        }))
    }
}
