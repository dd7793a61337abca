//! The depth collector: reads an entity's message counts from the Service Bus management (ATOM) endpoint.
//!
//! `GET {base}/{entity}?api-version=2021-05` answers with an Atom `<entry>` whose description holds
//! `<CountDetails>`; its children, in the namespace [`COUNT_DETAILS_NS`], are the active, dead-letter,
//! scheduled, transfer and transfer-dead-letter counts. Parsing is defensive: a missing `CountDetails` is an
//! error that says so (never zeros), a count that is not a number names its element.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;
use time::OffsetDateTime;

use super::sas::{sas_token, SecretString};
use super::Entity;

/// The namespace of the `CountDetails` children.
pub const COUNT_DETAILS_NS: &str = "http://schemas.microsoft.com/netservices/2011/06/servicebus";
/// The namespace of `QueueDescription` / `SubscriptionDescription` and their direct fields.
pub const DESCRIPTION_NS: &str =
    "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect";
/// The management API version trimtab speaks.
pub const API_VERSION: &str = "2021-05";
/// The scope of an Entra ID token for Service Bus.
pub const SERVICEBUS_SCOPE: &str = "https://servicebus.azure.net/.default";

/// An entity's message counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Messages available to receivers (KEDA scales on this one).
    pub active: u64,
    /// Messages in the dead-letter sub-queue.
    pub dead_letter: u64,
    /// Messages scheduled for later.
    pub scheduled: u64,
    /// Messages waiting to be forwarded.
    pub transfer: u64,
    /// Messages that failed to be forwarded.
    pub transfer_dead_letter: u64,
}

/// One depth reading.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EntityDepth {
    /// The entity path, for example `orders` or `events/Subscriptions/audit`.
    pub entity: String,
    /// The counts.
    pub counts: Counts,
    /// When the reading was taken (local clock).
    #[serde(with = "time::serde::rfc3339")]
    pub observed_at: OffsetDateTime,
}

/// What went wrong reading depth. Names the entity; never contains a key or token.
#[derive(Debug, thiserror::Error)]
pub enum DepthError {
    /// The management endpoint refused the credentials (HTTP 401 or 403).
    #[error("management endpoint refused the credentials for {entity} (http {status})")]
    Unauthorized {
        /// The entity path.
        entity: String,
        /// 401 or 403.
        status: u16,
    },
    /// The entity does not exist (HTTP 404, or an empty feed, which is how Service Bus answers a GET of an
    /// unknown entity).
    #[error("entity {entity} not found on the management endpoint")]
    NotFound {
        /// The entity path.
        entity: String,
    },
    /// Another HTTP status.
    #[error("management endpoint answered http {status} for {entity}: {body}")]
    Status {
        /// The entity path.
        entity: String,
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The request did not complete.
    #[error("management request for {entity} failed")]
    Transport {
        /// The entity path.
        entity: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The response has no `CountDetails` element.
    #[error("management response for {entity} has no CountDetails element")]
    MissingCountDetails {
        /// The entity path.
        entity: String,
    },
    /// `CountDetails` lacks one of the counts.
    #[error("management response for {entity} has no {element} in CountDetails")]
    MissingCount {
        /// The entity path.
        entity: String,
        /// The missing element's local name.
        element: &'static str,
    },
    /// A count is not a non-negative integer.
    #[error(
        "management response for {entity}: {element} is {value:?}, expected a non-negative integer"
    )]
    NotANumber {
        /// The entity path.
        entity: String,
        /// The element's local name.
        element: &'static str,
        /// The text found.
        value: String,
    },
    /// The body is not well-formed XML.
    #[error("management response for {entity} is not well-formed xml")]
    Xml {
        /// The entity path.
        entity: String,
        /// The parser's error.
        #[source]
        source: quick_xml::Error,
    },
    /// An Entra ID token could not be obtained.
    #[error("could not obtain an entra id token for the management endpoint: {detail}")]
    Token {
        /// What the credential said.
        detail: String,
    },
    /// The base URL and entity do not form a URL.
    #[error("management url {url:?} is invalid")]
    BadUrl {
        /// The URL that was built.
        url: String,
    },
}

impl DepthError {
    /// Whether the same reading may succeed later.
    pub fn is_retriable(&self) -> bool {
        match self {
            DepthError::Transport { .. } | DepthError::Token { .. } => true,
            DepthError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// How the collector authenticates to the management endpoint.
#[derive(Clone)]
pub enum ManagementAuth {
    /// A SAS token signed with a named key, renewed for every request.
    Sas {
        /// `SharedAccessKeyName`.
        key_name: String,
        /// `SharedAccessKey`.
        key: SecretString,
    },
    /// An Entra ID bearer token for [`SERVICEBUS_SCOPE`].
    EntraId(Arc<dyn TokenCredential>),
}

impl std::fmt::Debug for ManagementAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManagementAuth::Sas { key_name, .. } => f
                .debug_struct("Sas")
                .field("key_name", key_name)
                .field("key", &"<redacted>")
                .finish(),
            ManagementAuth::EntraId(_) => f.write_str("EntraId"),
        }
    }
}

/// Reads entity counts over HTTP. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DepthCollector {
    http: reqwest::Client,
    base: String,
    auth: ManagementAuth,
}

/// How long each SAS token the collector signs stays valid.
const SAS_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

impl DepthCollector {
    /// A collector for `base` (for example `https://contoso.servicebus.windows.net` or
    /// `http://127.0.0.1:8080`), with a request timeout.
    pub fn new(base: &str, auth: ManagementAuth, timeout: Duration) -> Result<Self, DepthError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|source| DepthError::Transport {
                entity: String::new(),
                source,
            })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth,
        })
    }

    /// The base URL the collector calls.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Reads the counts of one queue or subscription.
    pub async fn depth(&self, entity: &Entity) -> Result<EntityDepth, DepthError> {
        let path = entity.path();
        let resource = format!("{}/{}", self.base, path);
        let url = format!("{resource}?api-version={API_VERSION}");
        if url::Url::parse(&url).is_err() {
            return Err(DepthError::BadUrl { url });
        }
        let authorization = match &self.auth {
            ManagementAuth::Sas { key_name, key } => {
                let expiry = OffsetDateTime::now_utc() + SAS_TOKEN_LIFETIME;
                sas_token(&resource, key_name, key, expiry)
            }
            ManagementAuth::EntraId(credential) => {
                let token = credential
                    .get_token(&[SERVICEBUS_SCOPE], None)
                    .await
                    .map_err(|e| DepthError::Token {
                        detail: e.to_string(),
                    })?;
                format!("Bearer {}", token.token.secret())
            }
        };
        let response = self
            .http
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(|source| DepthError::Transport {
                entity: path.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|source| DepthError::Transport {
                entity: path.clone(),
                source,
            })?;
        match status {
            200 => {}
            401 | 403 => {
                return Err(DepthError::Unauthorized {
                    entity: path,
                    status,
                })
            }
            404 => return Err(DepthError::NotFound { entity: path }),
            _ => {
                let body: String = body.chars().take(200).collect();
                return Err(DepthError::Status {
                    entity: path,
                    status,
                    body,
                });
            }
        }
        let counts = parse_counts(&path, &body)?;
        tracing::debug!(entity = %path, active = counts.active, dead_letter = counts.dead_letter, "read entity depth");
        Ok(EntityDepth {
            entity: path,
            counts,
            observed_at: OffsetDateTime::now_utc(),
        })
    }
}

const COUNT_ELEMENTS: [&str; 5] = [
    "ActiveMessageCount",
    "DeadLetterMessageCount",
    "ScheduledMessageCount",
    "TransferMessageCount",
    "TransferDeadLetterMessageCount",
];

/// Parses the counts out of a management response body for `entity`.
pub fn parse_counts(entity: &str, xml: &str) -> Result<Counts, DepthError> {
    let xml_error = |source| DepthError::Xml {
        entity: entity.to_string(),
        source,
    };
    let mut reader = NsReader::from_str(xml);
    let mut depth = 0usize;
    let mut root_is_feed = None;
    let mut count_details_depth = None;
    let mut saw_count_details = false;
    let mut current: Option<usize> = None;
    let mut text = String::new();
    let mut values: [Option<String>; 5] = Default::default();
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(xml_error)?;
        match event {
            Event::Start(start) => {
                depth += 1;
                let local = start.local_name();
                if root_is_feed.is_none() {
                    root_is_feed = Some(local.as_ref() == b"feed");
                }
                if local.as_ref() == b"CountDetails" && count_details_depth.is_none() {
                    count_details_depth = Some(depth);
                    saw_count_details = true;
                } else if count_details_depth == Some(depth - 1)
                    && matches!(ns, ResolveResult::Bound(Namespace(n)) if n == COUNT_DETAILS_NS.as_bytes())
                {
                    current = COUNT_ELEMENTS
                        .iter()
                        .position(|name| name.as_bytes() == local.as_ref());
                    text.clear();
                }
            }
            Event::Empty(start) => {
                if root_is_feed.is_none() {
                    root_is_feed = Some(start.local_name().as_ref() == b"feed");
                }
                if start.local_name().as_ref() == b"CountDetails" {
                    saw_count_details = true;
                } else if count_details_depth == Some(depth)
                    && matches!(ns, ResolveResult::Bound(Namespace(n)) if n == COUNT_DETAILS_NS.as_bytes())
                {
                    if let Some(i) = COUNT_ELEMENTS
                        .iter()
                        .position(|name| name.as_bytes() == start.local_name().as_ref())
                    {
                        values[i] = Some(String::new());
                    }
                }
            }
            Event::Text(t) if current.is_some() => {
                text.push_str(&t.unescape().map_err(xml_error)?);
            }
            Event::End(_) => {
                if let Some(i) = current.take() {
                    values[i] = Some(text.trim().to_string());
                }
                if count_details_depth == Some(depth) {
                    count_details_depth = None;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_count_details {
        // Service Bus answers a GET of an unknown entity with 200 and an empty Atom feed.
        if root_is_feed == Some(true) {
            return Err(DepthError::NotFound {
                entity: entity.to_string(),
            });
        }
        return Err(DepthError::MissingCountDetails {
            entity: entity.to_string(),
        });
    }
    let mut numbers = [0u64; 5];
    for (i, element) in COUNT_ELEMENTS.iter().enumerate() {
        let value = values[i].take().ok_or(DepthError::MissingCount {
            entity: entity.to_string(),
            element,
        })?;
        numbers[i] = value.parse().map_err(|_| DepthError::NotANumber {
            entity: entity.to_string(),
            element,
            value,
        })?;
    }
    Ok(Counts {
        active: numbers[0],
        dead_letter: numbers[1],
        scheduled: numbers[2],
        transfer: numbers[3],
        transfer_dead_letter: numbers[4],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue entry shaped like the service's answer: Atom entry, QueueDescription in the connect namespace,
    /// CountDetails children under the `d2p1` prefix of the 2011/06 namespace.
    const QUEUE_BODY: &str = r#"<entry xml:base="https://contoso.servicebus.windows.net/orders?api-version=2021-05" xmlns="http://www.w3.org/2005/Atom"><id>https://contoso.servicebus.windows.net/orders?api-version=2021-05</id><title type="text">orders</title><published>2026-11-20T09:12:44Z</published><updated>2026-11-21T17:03:10Z</updated><author><name>contoso</name></author><link rel="self" href="https://contoso.servicebus.windows.net/orders?api-version=2021-05"/><content type="application/xml"><QueueDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><LockDuration>PT1M</LockDuration><MaxSizeInMegabytes>1024</MaxSizeInMegabytes><RequiresDuplicateDetection>false</RequiresDuplicateDetection><RequiresSession>false</RequiresSession><DefaultMessageTimeToLive>P14D</DefaultMessageTimeToLive><DeadLetteringOnMessageExpiration>false</DeadLetteringOnMessageExpiration><DuplicateDetectionHistoryTimeWindow>PT10M</DuplicateDetectionHistoryTimeWindow><MaxDeliveryCount>10</MaxDeliveryCount><EnableBatchedOperations>true</EnableBatchedOperations><SizeInBytes>48213</SizeInBytes><MessageCount>1290</MessageCount><IsAnonymousAccessible>false</IsAnonymousAccessible><AuthorizationRules/><Status>Active</Status><CreatedAt>2026-11-20T09:12:44.563Z</CreatedAt><UpdatedAt>2026-11-21T17:03:10.17Z</UpdatedAt><AccessedAt>2026-11-22T03:31:02.913Z</AccessedAt><SupportOrdering>true</SupportOrdering><CountDetails xmlns:d2p1="http://schemas.microsoft.com/netservices/2011/06/servicebus"><d2p1:ActiveMessageCount>1271</d2p1:ActiveMessageCount><d2p1:DeadLetterMessageCount>17</d2p1:DeadLetterMessageCount><d2p1:ScheduledMessageCount>2</d2p1:ScheduledMessageCount><d2p1:TransferMessageCount>0</d2p1:TransferMessageCount><d2p1:TransferDeadLetterMessageCount>0</d2p1:TransferDeadLetterMessageCount></CountDetails><AutoDeleteOnIdle>P10675199DT2H48M5.4775807S</AutoDeleteOnIdle><EnablePartitioning>false</EnablePartitioning><EntityAvailabilityStatus>Available</EntityAvailabilityStatus><EnableExpress>false</EnableExpress></QueueDescription></content></entry>"#;

    /// A subscription entry, pretty-printed, with the count namespace bound as the default namespace instead of a
    /// prefix, to prove the parser matches by namespace and not by prefix.
    const SUBSCRIPTION_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<entry xmlns="http://www.w3.org/2005/Atom">
  <id>https://contoso.servicebus.windows.net/events/Subscriptions/audit?api-version=2021-05</id>
  <title type="text">audit</title>
  <content type="application/xml">
    <SubscriptionDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect">
      <LockDuration>PT30S</LockDuration>
      <MessageCount>44</MessageCount>
      <MaxDeliveryCount>10</MaxDeliveryCount>
      <CountDetails>
        <ActiveMessageCount xmlns="http://schemas.microsoft.com/netservices/2011/06/servicebus">40</ActiveMessageCount>
        <DeadLetterMessageCount xmlns="http://schemas.microsoft.com/netservices/2011/06/servicebus">4</DeadLetterMessageCount>
        <ScheduledMessageCount xmlns="http://schemas.microsoft.com/netservices/2011/06/servicebus">0</ScheduledMessageCount>
        <TransferMessageCount xmlns="http://schemas.microsoft.com/netservices/2011/06/servicebus">0</TransferMessageCount>
        <TransferDeadLetterMessageCount xmlns="http://schemas.microsoft.com/netservices/2011/06/servicebus">0</TransferDeadLetterMessageCount>
      </CountDetails>
      <Status>Active</Status>
    </SubscriptionDescription>
  </content>
</entry>"#;

    #[test]
    fn reads_queue_counts() {
        let counts = parse_counts("orders", QUEUE_BODY).unwrap();
        assert_eq!(
            counts,
            Counts {
                active: 1271,
                dead_letter: 17,
                scheduled: 2,
                transfer: 0,
                transfer_dead_letter: 0
            }
        );
    }

    #[test]
    fn reads_subscription_counts_by_namespace_not_prefix() {
        let counts = parse_counts("events/Subscriptions/audit", SUBSCRIPTION_BODY).unwrap();
        assert_eq!((counts.active, counts.dead_letter), (40, 4));
    }

    #[test]
    fn ignores_count_elements_in_the_wrong_namespace() {
        let body = QUEUE_BODY.replace(
            "xmlns:d2p1=\"http://schemas.microsoft.com/netservices/2011/06/servicebus\"",
            "xmlns:d2p1=\"urn:something-else\"",
        );
        let err = parse_counts("orders", &body).unwrap_err();
        assert_eq!(
            err.to_string(),
            "management response for orders has no ActiveMessageCount in CountDetails"
        );
    }

    #[test]
    fn missing_count_details_is_an_error_not_zeros() {
        let start = QUEUE_BODY.find("<CountDetails").unwrap();
        let end = QUEUE_BODY.find("</CountDetails>").unwrap() + "</CountDetails>".len();
        let body = format!("{}{}", &QUEUE_BODY[..start], &QUEUE_BODY[end..]);
        let err = parse_counts("orders", &body).unwrap_err();
        assert_eq!(
            err.to_string(),
            "management response for orders has no CountDetails element"
        );
    }

    #[test]
    fn a_non_number_names_the_element() {
        let body = QUEUE_BODY.replace(
            "<d2p1:DeadLetterMessageCount>17<",
            "<d2p1:DeadLetterMessageCount>seventeen<",
        );
        let err = parse_counts("orders", &body).unwrap_err();
        assert_eq!(
            err.to_string(),
            "management response for orders: DeadLetterMessageCount is \"seventeen\", expected a non-negative integer"
        );
        let body = QUEUE_BODY.replace(
            "<d2p1:ActiveMessageCount>1271<",
            "<d2p1:ActiveMessageCount>-1<",
        );
        assert!(matches!(
            parse_counts("orders", &body),
            Err(DepthError::NotANumber {
                element: "ActiveMessageCount",
                ..
            })
        ));
    }

    #[test]
    fn empty_feed_means_the_entity_does_not_exist() {
        let body = r#"<feed xmlns="http://www.w3.org/2005/Atom"><title type="text">Publicly Listed Services</title><subtitle type="text">This is the list of publicly-listed services currently available.</subtitle><id>uuid:8d8e2b33-1cc5-4d1f-b2c1-3c5b3a4a0d77;id=1</id><updated>2026-11-22T03:31:02Z</updated><generator>Service Bus 1.1</generator></feed>"#;
        assert!(
            matches!(parse_counts("nope", body), Err(DepthError::NotFound { entity }) if entity == "nope")
        );
    }

    #[test]
    fn malformed_xml_is_reported() {
        let err = parse_counts("orders", "<entry><content></entry>").unwrap_err();
        assert!(matches!(err, DepthError::Xml { .. }), "{err:?}");
    }
}
