//! The management HTTP endpoint: `GET /{entity}?api-version=..` answers an Atom entry with runtime counts.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::broker::{now_ms, Broker};
use super::sas::SasKey;

const ATOM: &str = "http://www.w3.org/2005/Atom";
const CONNECT: &str = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect";
const COUNTS: &str = "http://schemas.microsoft.com/netservices/2011/06/servicebus";

pub(crate) struct HttpState {
    pub(crate) broker: Arc<Broker>,
    pub(crate) key: SasKey,
}

pub(crate) fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/{*path}", get(entity))
        .with_state(state)
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            "application/atom+xml;type=entry;charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn error(status: StatusCode, detail: &str) -> Response {
    xml(
        status,
        format!(
            "<Error><Code>{}</Code><Detail>{}</Detail></Error>",
            status.as_u16(),
            escape(detail)
        ),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `PT1M`, `PT30S`, `PT0.5S`: the xsd:duration form Service Bus uses for lock durations.
fn iso_duration(duration: std::time::Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("PT{}M", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("PT{}S", ms / 1_000)
    } else {
        format!("PT{}.{:03}S", ms / 1_000, ms % 1_000)
    }
}

async fn entity(
    State(state): State<Arc<HttpState>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Err(e) = state.key.verify(token, now_ms() / 1000) {
        tracing::info!(error = %e, "management request refused");
        return error(
            StatusCode::UNAUTHORIZED,
            &format!("InvalidSignature: {e}. TrackingId:standin"),
        );
    }
    let Some((display, counts)) = state.broker.counts(&path) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("The messaging entity '{path}' could not be found. To know more visit https://aka.ms/sbResourceMgrExceptions."),
        );
    };
    let description = if display.contains("/Subscriptions/") {
        "SubscriptionDescription"
    } else {
        "QueueDescription"
    };
    let limits = state.broker.limits;
    let updated = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let total = counts.active
        + counts.dead_letter
        + counts.scheduled
        + counts.transfer
        + counts.transfer_dead_letter;
    let name = escape(&display);
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<entry xmlns="{ATOM}">
  <id>/{name}</id>
  <title type="text">{name}</title>
  <updated>{updated}</updated>
  <content type="application/xml">
    <{description} xmlns="{CONNECT}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
      <LockDuration>{lock}</LockDuration>
      <MaxDeliveryCount>{max_delivery}</MaxDeliveryCount>
      <SizeInBytes>0</SizeInBytes>
      <MessageCount>{total}</MessageCount>
      <CountDetails xmlns:d2p1="{COUNTS}">
        <d2p1:ActiveMessageCount>{active}</d2p1:ActiveMessageCount>
        <d2p1:DeadLetterMessageCount>{dead}</d2p1:DeadLetterMessageCount>
        <d2p1:ScheduledMessageCount>{scheduled}</d2p1:ScheduledMessageCount>
        <d2p1:TransferMessageCount>{transfer}</d2p1:TransferMessageCount>
        <d2p1:TransferDeadLetterMessageCount>{transfer_dead}</d2p1:TransferDeadLetterMessageCount>
      </CountDetails>
      <Status>Active</Status>
    </{description}>
  </content>
</entry>
"#,
        lock = iso_duration(limits.lock_duration),
        max_delivery = limits.max_delivery_count,
        active = counts.active,
        dead = counts.dead_letter,
        scheduled = counts.scheduled,
        transfer = counts.transfer,
        transfer_dead = counts.transfer_dead_letter,
    );
    xml(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lock_durations_read_as_xsd_durations() {
        assert_eq!(iso_duration(Duration::from_secs(60)), "PT1M");
        assert_eq!(iso_duration(Duration::from_secs(30)), "PT30S");
        assert_eq!(iso_duration(Duration::from_millis(1_500)), "PT1.500S");
    }
}
