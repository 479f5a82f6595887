//! What customers declared about being contacted, and the contact decision: consent per
//! purpose × channel, do-not-contact, topics, frequency (opt-down), quiet hours. Pure.

use std::collections::BTreeMap;

use chrono::{NaiveTime, TimeZone, Timelike};
use serde::{Deserialize, Serialize};

use crate::event::{Channel, ConsentChange, ConsentStatus, Payload};
use crate::record::{Stamp, Stamped, preference_items, upsert_newer};
use crate::{DomainError, Timestamp};

/// Preference item naming a do-not-contact flag.
pub const DO_NOT_CONTACT: &str = "do_not_contact";

/// What was declared about one contact point (an e-mail address or a phone number) rather
/// than about a record: an unsubscribe link knows only the address. It applies to whichever
/// entity holds the contact point, now or later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactPointState {
    /// The data key sealing the events about this contact point (see `LoggedEvent::key_ref`).
    pub key_ref: String,
    /// `purpose/channel` → the latest consent declared for this contact point.
    pub consents: BTreeMap<String, Stamped<ConsentChange>>,
    /// Preference items (`do_not_contact`, `topic.offers`, …) → value.
    pub preferences: BTreeMap<String, Stamped<String>>,
    /// Sequence numbers of the log entries about this contact point.
    pub trail: Vec<u64>,
}

impl ContactPointState {
    /// An empty state whose events are sealed with the key `key_ref`.
    pub fn new(key_ref: String) -> Self {
        ContactPointState {
            key_ref,
            consents: BTreeMap::new(),
            preferences: BTreeMap::new(),
            trail: Vec::new(),
        }
    }

    /// Applies a consent or preference payload; values only move forward in event time.
    pub fn apply(&mut self, payload: &Payload, stamp: Stamp) -> bool {
        if self.trail.last().is_none_or(|&last| last < stamp.seq) {
            self.trail.push(stamp.seq);
        }
        match payload {
            Payload::Consent(consent) => upsert_newer(
                &mut self.consents,
                consent_key(&consent.purpose, consent.channel),
                consent.clone(),
                stamp,
            ),
            Payload::Preference(preference) => {
                let mut changed = false;
                for (item, value) in preference_items(preference) {
                    changed |= upsert_newer(&mut self.preferences, item, value, stamp);
                }
                changed
            }
            _ => false,
        }
    }
}

/// The key of a consent in a record, a golden record or a contact point.
pub fn consent_key(purpose: &str, channel: Channel) -> String {
    format!("{purpose}/{}", channel.as_str())
}

/// One consent as the contact decision weighs it, with who declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredConsent {
    pub status: ConsentStatus,
    pub expires_at: Option<Timestamp>,
    pub legal_basis: Option<String>,
    /// `source/subject` of the record, or `contact point <value>`.
    pub declared_by: String,
    pub time: Timestamp,
}

/// Quiet hours, local to the customer: from `start` until `end` (may wrap midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    /// Parses `21:00-08:00`.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let invalid =
            || DomainError::invalid("quiet_hours", format!("`{text}` is not HH:MM-HH:MM"));
        let (start, end) = text.split_once('-').ok_or_else(invalid)?;
        let time = |t: &str| NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| invalid());
        Ok(QuietHours {
            start: time(start)?,
            end: time(end)?,
        })
    }

    fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

impl std::fmt::Display for QuietHours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

/// At most `count` contacts per `days` days on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    pub count: u32,
    pub days: u32,
}

impl FrequencyCap {
    /// Reads a frequency as customers declare it: `daily`, `weekly`, `fortnightly`,
    /// `monthly`, `quarterly`, `yearly`, `never`, or `N per day|week|month|year` (`N/week`).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase();
        let days = |unit: &str| match unit.trim_end_matches('s') {
            "day" => Some(1),
            "week" => Some(7),
            "fortnight" => Some(14),
            "month" => Some(30),
            "quarter" => Some(91),
            "year" => Some(365),
            _ => None,
        };
        let named = match text.as_str() {
            "daily" => Some((1, 1)),
            "weekly" => Some((1, 7)),
            "fortnightly" | "biweekly" => Some((1, 14)),
            "monthly" => Some((1, 30)),
            "quarterly" => Some((1, 91)),
            "yearly" | "annually" => Some((1, 365)),
            "never" => Some((0, 365)),
            _ => None,
        };
        if let Some((count, days)) = named {
            return Some(FrequencyCap { count, days });
        }
        let (count, unit) = text
            .split_once(" per ")
            .or_else(|| text.split_once('/'))
            .or_else(|| text.split_once(" a "))?;
        let count = count.trim().trim_end_matches('x').trim().parse().ok()?;
        Some(FrequencyCap {
            count,
            days: days(unit.trim())?,
        })
    }

    /// The window's length in microseconds.
    fn window_micros(self) -> i64 {
        i64::from(self.days) * 86_400 * 1_000_000
    }
}

impl std::fmt::Display for FrequencyCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return f.write_str("never");
        }
        write!(f, "{} per {} day(s)", self.count, self.days)
    }
}

/// The operator's contact rules; the customer's own declarations come on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactPolicy {
    /// No contact on `quiet_channels` in these local hours.
    pub quiet_hours: Option<QuietHours>,
    pub quiet_channels: Vec<Channel>,
    /// Used when the customer's golden record has no valid `timezone` attribute.
    pub default_time_zone: chrono_tz::Tz,
    /// A cap per channel when the customer declared no frequency.
    pub default_caps: BTreeMap<Channel, FrequencyCap>,
    /// Purposes that need no consent (a receipt, a service notice: contract or legal
    /// obligation); a denial or withdrawal for them is still honoured.
    pub consent_not_required: Vec<String>,
}

impl Default for ContactPolicy {
    fn default() -> Self {
        ContactPolicy {
            quiet_hours: Some(QuietHours {
                start: NaiveTime::from_hms_opt(21, 0, 0).expect("valid time"),
                end: NaiveTime::from_hms_opt(8, 0, 0).expect("valid time"),
            }),
            quiet_channels: vec![Channel::Phone, Channel::Sms, Channel::Push],
            default_time_zone: chrono_tz::UTC,
            default_caps: BTreeMap::new(),
            consent_not_required: vec!["service".to_owned()],
        }
    }
}

/// The question: may we contact on `channel` for `purpose` (and `topic`) at `at`?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactQuestion {
    pub channel: Channel,
    pub purpose: String,
    pub topic: Option<String>,
    pub at: Timestamp,
}

/// What the hub holds about the person that bears on the question.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactFacts {
    /// The most restrictive consent for the purpose and channel, if any was declared.
    pub consent: Option<DeclaredConsent>,
    /// Who declared do-not-contact, if anyone did.
    pub do_not_contact: Option<String>,
    /// The customer's word on the topic, with who said it.
    pub topic: Option<(bool, String)>,
    /// The declared frequency for the channel, with who declared it.
    pub frequency: Option<(String, String)>,
    /// The IANA time zone from the golden record, if any.
    pub time_zone: Option<String>,
    /// The channel the customer prefers, with who declared it.
    pub preferred_channel: Option<(String, String)>,
    /// When the customer was contacted on the channel (`contact.recorded`).
    pub contacts: Vec<Timestamp>,
}

/// One reason of a contact decision; `blocks` says whether it forbids the contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactReason {
    pub code: &'static str,
    pub blocks: bool,
    pub detail: String,
}

/// The answer, with every reason that was weighed (allowing or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactDecision {
    pub allowed: bool,
    pub reasons: Vec<ContactReason>,
}

impl ContactDecision {
    fn reason(&mut self, code: &'static str, blocks: bool, detail: String) {
        self.allowed &= !blocks;
        self.reasons.push(ContactReason {
            code,
            blocks,
            detail,
        });
    }
}

/// Decides whether a contact is allowed, naming every reason.
pub fn decide_contact(
    question: &ContactQuestion,
    facts: &ContactFacts,
    policy: &ContactPolicy,
) -> ContactDecision {
    let mut d = ContactDecision {
        allowed: true,
        reasons: Vec::new(),
    };
    let channel = question.channel.as_str();
    let purpose = &question.purpose;
    let not_required = policy.consent_not_required.contains(purpose);
    match &facts.consent {
        None if not_required => d.reason(
            "consent_not_required",
            false,
            format!("`{purpose}` needs no consent on {channel}"),
        ),
        None => d.reason(
            "consent_missing",
            true,
            format!("no consent for `{purpose}` on {channel} was declared"),
        ),
        Some(c) => {
            let by = format!("by {} at {}", c.declared_by, c.time);
            match c.status {
                ConsentStatus::Withdrawn => d.reason(
                    "consent_withdrawn",
                    true,
                    format!("consent for `{purpose}` on {channel} withdrawn {by}"),
                ),
                ConsentStatus::Denied => d.reason(
                    "consent_denied",
                    true,
                    format!("consent for `{purpose}` on {channel} denied {by}"),
                ),
                ConsentStatus::Granted => match c.expires_at {
                    Some(expiry) if expiry <= question.at => d.reason(
                        "consent_expired",
                        !not_required,
                        format!(
                            "consent for `{purpose}` on {channel} granted {by} expired at {expiry}"
                        ),
                    ),
                    _ => d.reason(
                        "consent_granted",
                        false,
                        format!(
                            "consent for `{purpose}` on {channel} granted {by}{}{}",
                            c.legal_basis
                                .as_deref()
                                .map(|b| format!(", legal basis {b}"))
                                .unwrap_or_default(),
                            c.expires_at
                                .map(|e| format!(", until {e}"))
                                .unwrap_or_default()
                        ),
                    ),
                },
            }
        }
    }
    // A preference, not a rule: said so the campaign can choose, never blocking.
    if let Some((preferred, by)) = &facts.preferred_channel
        && preferred != channel
    {
        d.reason(
            "other_channel_preferred",
            false,
            format!("prefers {preferred} (declared by {by})"),
        );
    }
    if let Some(by) = &facts.do_not_contact {
        d.reason(
            "do_not_contact",
            true,
            format!("do-not-contact declared by {by}"),
        );
    }
    if let Some(topic) = &question.topic {
        match &facts.topic {
            Some((false, by)) => d.reason(
                "topic_unsubscribed",
                true,
                format!("unsubscribed from topic `{topic}` by {by}"),
            ),
            Some((true, by)) => d.reason(
                "topic_subscribed",
                false,
                format!("subscribed to topic `{topic}` by {by}"),
            ),
            None => d.reason(
                "topic_not_declared",
                false,
                format!("no declaration about topic `{topic}`"),
            ),
        }
    }
    if let Some(quiet) = policy.quiet_hours
        && policy.quiet_channels.contains(&question.channel)
    {
        let (tz, tz_note) = match facts.time_zone.as_deref() {
            Some(name) => match name.parse::<chrono_tz::Tz>() {
                Ok(tz) => (tz, String::new()),
                Err(_) => (
                    policy.default_time_zone,
                    format!(" (time zone `{name}` unknown; default used)"),
                ),
            },
            None => (policy.default_time_zone, String::new()),
        };
        let local = chrono::Utc
            .timestamp_micros(question.at.0)
            .single()
            .map(|t| t.with_timezone(&tz).time())
            .unwrap_or_default();
        let shown = format!(
            "{:02}:{:02} in {}{tz_note}",
            local.hour(),
            local.minute(),
            tz.name()
        );
        if quiet.contains(local) {
            d.reason(
                "quiet_hours",
                true,
                format!("quiet hours {quiet} on {channel}: it is {shown}"),
            );
        } else {
            d.reason(
                "outside_quiet_hours",
                false,
                format!("outside quiet hours {quiet}: it is {shown}"),
            );
        }
    }
    let declared = facts
        .frequency
        .as_ref()
        .map(|(text, by)| (FrequencyCap::parse(text), text.as_str(), by.clone()));
    let cap = match declared {
        Some((Some(cap), _, by)) => Some((cap, format!("declared by {by}"))),
        Some((None, text, by)) => {
            d.reason(
                "frequency_not_understood",
                false,
                format!("frequency `{text}` declared by {by} is not understood; not applied"),
            );
            None
        }
        None => policy
            .default_caps
            .get(&question.channel)
            .map(|cap| (*cap, "the default cap".to_owned())),
    };
    if let Some((cap, whose)) = cap {
        let since = question.at.0 - cap.window_micros();
        let recent = facts
            .contacts
            .iter()
            .filter(|t| t.0 > since && t.0 <= question.at.0)
            .count();
        if recent as u64 >= u64::from(cap.count) {
            d.reason(
                "frequency_cap_reached",
                true,
                format!(
                    "{recent} contact(s) on {channel} in the last {} day(s); cap {cap} ({whose})",
                    cap.days
                ),
            );
        } else {
            d.reason(
                "within_frequency_cap",
                false,
                format!(
                    "{recent} contact(s) on {channel} in the last {} day(s); cap {cap} ({whose})",
                    cap.days
                ),
            );
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339("at", text).unwrap()
    }

    fn question(channel: Channel, when: &str) -> ContactQuestion {
        ContactQuestion {
            channel,
            purpose: "marketing".into(),
            topic: None,
            at: at(when),
        }
    }

    fn granted(expires: Option<&str>) -> Option<DeclaredConsent> {
        Some(DeclaredConsent {
            status: ConsentStatus::Granted,
            expires_at: expires.map(at),
            legal_basis: Some("consent".into()),
            declared_by: "web/1".into(),
            time: at("2026-01-01T00:00:00Z"),
        })
    }

    fn codes(d: &ContactDecision) -> Vec<&'static str> {
        d.reasons.iter().map(|r| r.code).collect()
    }

    #[test]
    fn each_reason_decides_as_it_says() {
        let policy = ContactPolicy::default();
        let noon = question(Channel::Email, "2026-06-01T12:00:00Z");
        let mut facts = ContactFacts {
            consent: granted(None),
            ..ContactFacts::default()
        };
        let d = decide_contact(&noon, &facts, &policy);
        assert!(d.allowed, "{d:?}");
        assert_eq!(codes(&d), ["consent_granted"]);

        facts.consent = None;
        let d = decide_contact(&noon, &facts, &policy);
        assert!(!d.allowed);
        assert_eq!(codes(&d), ["consent_missing"]);

        for (status, code) in [
            (ConsentStatus::Withdrawn, "consent_withdrawn"),
            (ConsentStatus::Denied, "consent_denied"),
        ] {
            facts.consent = granted(None).map(|c| DeclaredConsent { status, ..c });
            let d = decide_contact(&noon, &facts, &policy);
            assert!(!d.allowed);
            assert_eq!(codes(&d), [code]);
        }

        facts.consent = granted(Some("2026-05-01T00:00:00Z"));
        let d = decide_contact(&noon, &facts, &policy);
        assert!(!d.allowed);
        assert_eq!(codes(&d), ["consent_expired"]);

        facts.preferred_channel = Some(("sms".into(), "pos/9".into()));
        let d = decide_contact(&noon, &facts, &policy);
        assert!(
            !d.allowed,
            "a preference never allows what consent does not"
        );
        facts.consent = granted(None);
        let d = decide_contact(&noon, &facts, &policy);
        assert!(d.allowed);
        assert_eq!(codes(&d), ["consent_granted", "other_channel_preferred"]);
        facts.preferred_channel = None;
        facts.do_not_contact = Some("pos/9".into());
        let d = decide_contact(&noon, &facts, &policy);
        assert!(!d.allowed);
        assert_eq!(codes(&d), ["consent_granted", "do_not_contact"]);
    }

    #[test]
    fn quiet_hours_are_local_to_the_customer() {
        let policy = ContactPolicy::default();
        let facts = ContactFacts {
            consent: granted(None),
            time_zone: Some("America/New_York".into()),
            ..ContactFacts::default()
        };
        // 03:00 UTC is 22:00 or 23:00 in New York: quiet for a call, not for an e-mail.
        let night = question(Channel::Phone, "2026-06-01T03:00:00Z");
        let d = decide_contact(&night, &facts, &policy);
        assert!(!d.allowed);
        assert_eq!(codes(&d), ["consent_granted", "quiet_hours"]);
        assert!(d.reasons[1].detail.contains("America/New_York"), "{d:?}");
        let d = decide_contact(
            &question(Channel::Email, "2026-06-01T03:00:00Z"),
            &facts,
            &policy,
        );
        assert!(d.allowed);
        // 15:00 UTC is 11:00 in New York.
        let day = question(Channel::Phone, "2026-06-01T15:00:00Z");
        let d = decide_contact(&day, &facts, &policy);
        assert!(d.allowed, "{d:?}");
        assert_eq!(codes(&d), ["consent_granted", "outside_quiet_hours"]);
    }

    #[test]
    fn declared_frequency_caps_contacts_in_its_window() {
        let policy = ContactPolicy::default();
        let mut facts = ContactFacts {
            consent: granted(None),
            frequency: Some(("weekly".into(), "web/1".into())),
            contacts: vec![at("2026-05-28T10:00:00Z")],
            ..ContactFacts::default()
        };
        let q = question(Channel::Email, "2026-06-01T12:00:00Z");
        let d = decide_contact(&q, &facts, &policy);
        assert!(!d.allowed);
        assert_eq!(codes(&d), ["consent_granted", "frequency_cap_reached"]);
        // Eight days later the week has passed.
        let later = question(Channel::Email, "2026-06-05T12:00:00Z");
        assert!(decide_contact(&later, &facts, &policy).allowed);
        facts.frequency = Some(("2 per week".into(), "web/1".into()));
        assert!(decide_contact(&q, &facts, &policy).allowed);
        facts.frequency = Some(("whenever".into(), "web/1".into()));
        let d = decide_contact(&q, &facts, &policy);
        assert!(d.allowed);
        assert_eq!(codes(&d), ["consent_granted", "frequency_not_understood"]);
    }

    #[test]
    fn topics_and_purposes_without_consent() {
        let policy = ContactPolicy::default();
        let mut q = question(Channel::Email, "2026-06-01T12:00:00Z");
        q.purpose = "service".into();
        let facts = ContactFacts::default();
        let d = decide_contact(&q, &facts, &policy);
        assert!(d.allowed);
        assert_eq!(codes(&d), ["consent_not_required"]);
        q.topic = Some("offers".into());
        let facts = ContactFacts {
            topic: Some((false, "web/1".into())),
            ..ContactFacts::default()
        };
        let d = decide_contact(&q, &facts, &policy);
        assert!(!d.allowed);
        assert_eq!(codes(&d), ["consent_not_required", "topic_unsubscribed"]);
    }

    #[test]
    fn frequencies_parse() {
        for (text, count, days) in [
            ("weekly", 1, 7),
            ("Monthly", 1, 30),
            ("never", 0, 365),
            ("3 per week", 3, 7),
            ("2/month", 2, 30),
            ("2x per day", 2, 1),
        ] {
            assert_eq!(
                FrequencyCap::parse(text),
                Some(FrequencyCap { count, days }),
                "{text}"
            );
        }
        assert_eq!(FrequencyCap::parse("sometimes"), None);
        assert!(QuietHours::parse("21:00-08:00").is_ok());
        assert!(QuietHours::parse("9pm").is_err());
    }
}
