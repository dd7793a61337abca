//! The OpenAPI 3 document at `/v1/openapi.json`, written as data: one [`Operation`] per route.
//!
//! A unit test checks this table against the routes [`super::routes`] mounts, both ways, so a route cannot be
//! added without its entry here.

use axum::http::Method;
use axum::Json;
use serde_json::{json, Map, Value};

use super::auth::{access, Access};

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// `GET`, `POST`.
    pub method: &'static str,
    /// The axum path, with `{id}` style parameters (the same spelling OpenAPI uses).
    pub path: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// Grouping on the page of the document.
    pub tag: &'static str,
    /// Query parameters: (name, type, description).
    pub query: &'static [(&'static str, &'static str, &'static str)],
    /// The JSON request body's fields: (name, description); empty for no body.
    pub body: &'static [(&'static str, &'static str)],
    /// The response's content type.
    pub produces: &'static str,
}

const JSON: &str = "application/json";

const fn op(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Operation {
    Operation {
        method,
        path,
        summary,
        tag,
        query: &[],
        body: &[],
        produces: JSON,
    }
}

/// Every operation of the surface, in the order the document lists them.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        produces: "text/html",
        ..op("GET", "/", "page", "The operator's web page")
    },
    Operation {
        produces: "text/javascript",
        ..op("GET", "/assets/app.js", "page", "The page's script")
    },
    Operation {
        produces: "text/css",
        ..op("GET", "/assets/app.css", "page", "The page's style sheet")
    },
    Operation {
        produces: "text/plain",
        ..op(
            "GET",
            "/health",
            "health",
            "The process answers (older spelling of /healthz)",
        )
    },
    Operation {
        produces: "text/plain",
        ..op("GET", "/healthz", "health", "The process answers")
    },
    op(
        "GET",
        "/readyz",
        "health",
        "200 when Service Bus, Cassandra and LINSTOR answer; 503 naming those that do not",
    ),
    Operation {
        produces: "text/plain",
        ..op(
            "GET",
            "/metrics",
            "metrics",
            "Everything trimtab measures, in the Prometheus text format",
        )
    },
    op("GET", "/v1/openapi.json", "meta", "This document"),
    op(
        "GET",
        "/v1/state",
        "state",
        "Pipeline counters, lag, knobs, writer window, the agent's snapshot and the pause flag",
    ),
    op(
        "GET",
        "/v1/queues",
        "state",
        "Depth of every Service Bus entity as last sampled",
    ),
    Operation {
        query: &[
            (
                "name",
                "string",
                "only series of this metric, such as queue_active or lag_oldest_age_s",
            ),
            (
                "since",
                "integer",
                "only samples at or after these unix seconds",
            ),
        ],
        ..op(
            "GET",
            "/v1/metrics/series",
            "metrics",
            "The metric store's recent windows, per series",
        )
    },
    op(
        "GET",
        "/v1/forecasts",
        "forecasts",
        "The latest forecast per series with its intervals, accuracy and recent actual values",
    ),
    op(
        "GET",
        "/v1/placement",
        "placement",
        "Replicas and capacity per LINSTOR node and pool",
    ),
    Operation {
        query: &[(
            "open",
            "boolean",
            "only proposals still open for a decision",
        )],
        ..op(
            "GET",
            "/v1/proposals",
            "proposals",
            "Proposals, newest first",
        )
    },
    op(
        "GET",
        "/v1/proposals/{id}",
        "proposals",
        "One proposal in full: change, reason, gate decision, plan hash",
    ),
    Operation {
        body: &[(
            "by",
            "who approves, recorded in the audit log (default api)",
        )],
        ..op(
            "POST",
            "/v1/proposals/{id}/approve",
            "proposals",
            "Approve an open proposal (audited first); the agent runs exactly it next step",
        )
    },
    Operation {
        body: &[("by", "who rejects, recorded in the audit log (default api)")],
        ..op(
            "POST",
            "/v1/proposals/{id}/reject",
            "proposals",
            "Reject an open proposal (audited first); it never runs",
        )
    },
    op(
        "GET",
        "/v1/mode",
        "mode",
        "Configured and effective mode, why it was dropped, and the pause flag",
    ),
    Operation {
        body: &[
            ("by", "who pauses (default api)"),
            ("reason", "why, kept with the flag"),
        ],
        ..op(
            "POST",
            "/v1/pause",
            "mode",
            "Stop all applying (the kill switch), audited first",
        )
    },
    Operation {
        body: &[("by", "who resumes (default api)"), ("reason", "why")],
        ..op(
            "POST",
            "/v1/resume",
            "mode",
            "Allow applying again, audited first",
        )
    },
    Operation {
        query: &[
            ("entity", "string", "queue or topic/Subscriptions/name (default: the first pipeline entity)"),
            ("reason", "string", "only dead letters with this reason"),
            ("kind", "string", "only messages of this kind"),
            ("age_gt", "string", "only older than this, such as 15m"),
            ("age_lt", "string", "only younger than this, such as 2h"),
            ("limit", "integer", "at most this many"),
        ],
        ..op("GET", "/v1/dlq", "dlq", "Dead-lettered messages with their reasons (peeked, nothing changes)")
    },
    Operation {
        query: &[("entity", "string", "as for /v1/dlq")],
        ..op("GET", "/v1/dlq/messages/{seq}", "dlq", "One dead-lettered message by sequence number")
    },
    Operation {
        body: &[
            ("entity", "as for /v1/dlq"),
            ("filter", "filter expressions: reason=R, kind=K, age>15m, age<2h"),
            ("dry_run", "plan and ask the gate only"),
            ("max", "at most this many messages (default 1000)"),
            ("rate", "messages per second at most (default 100)"),
            ("by", "who asks, for the audit log"),
        ],
        ..op(
            "POST",
            "/v1/dlq/redrive",
            "dlq",
            "Send dead letters back to their entity, keeping their message id; gated, rate-limited and audited",
        )
    },
    Operation {
        query: &[(
            "limit",
            "integer",
            "how many of the newest records, 1 to 1000 (default 50)",
        )],
        ..op(
            "GET",
            "/v1/audit",
            "audit",
            "The newest audit records, oldest first",
        )
    },
    Operation {
        body: &[
            ("question", "the question in plain language (required)"),
            ("templated_only", "answer from templates, without the model"),
        ],
        ..op(
            "POST",
            "/v1/chat",
            "chat",
            "Ask a question; the answer cites the numbers it uses (when chat-ops runs)",
        )
    },
];

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { JSON: { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for o in OPERATIONS {
        let method: Method = o.method.parse().unwrap_or(Method::GET);
        let mut parameters: Vec<Value> = o
            .query
            .iter()
            .map(|(name, ty, description)| {
                json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": ty } })
            })
            .collect();
        if o.path.contains("{id}") {
            parameters.push(json!({ "name": "id", "in": "path", "required": true, "description": "proposal id", "schema": { "type": "string" } }));
        }
        let mut responses = Map::new();
        responses.insert(
            "200".into(),
            json!({ "description": "success", "content": { o.produces: { "schema": { "type": if o.produces == JSON { "object" } else { "string" } } } } }),
        );
        responses.insert(
            "400".into(),
            error_response("malformed input, named in the error"),
        );
        let required = access(&method, o.path);
        let security = match required {
            Access::Open => json!([]),
            Access::Read => json!([{ "readToken": [] }, {}]),
            Access::Write => {
                responses.insert(
                    "401".into(),
                    error_response("missing or wrong bearer token"),
                );
                responses.insert(
                    "403".into(),
                    error_response("no write token configured on the server"),
                );
                responses.insert(
                    "409".into(),
                    error_response("the proposal is no longer open"),
                );
                json!([{ "writeToken": [] }])
            }
        };
        if required == Access::Read {
            responses.insert(
                "401".into(),
                error_response("a read token is configured and was not sent"),
            );
        }
        responses.insert("404".into(), error_response("no such route or proposal"));
        responses.insert(
            "503".into(),
            error_response("this part of trimtab is not running here"),
        );
        let mut operation = json!({
            "summary": o.summary,
            "tags": [o.tag],
            "operationId": format!("{}_{}", o.method.to_lowercase(), o.path.trim_matches('/').replace(['/', '{', '}', '.'], "_")),
            "parameters": parameters,
            "responses": responses,
            "security": security,
        });
        if !o.body.is_empty() {
            let properties: Map<String, Value> = o
                .body
                .iter()
                .map(|(name, description)| {
                    let ty = if *name == "templated_only" {
                        "boolean"
                    } else {
                        "string"
                    };
                    (
                        name.to_string(),
                        json!({ "type": ty, "description": description }),
                    )
                })
                .collect();
            operation["requestBody"] = json!({
                "required": o.path == "/v1/chat",
                "content": { JSON: { "schema": { "type": "object", "additionalProperties": false, "properties": properties } } }
            });
        }
        let entry = paths.entry(o.path.to_string()).or_insert_with(|| json!({}));
        entry[o.method.to_lowercase()] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "trimtab",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The operator's surface of trimtab: state, metrics, forecasts, placement, proposals, the kill switch, audit and chat. Changes need the write token; reads need the read token when one is configured."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "writeToken": { "type": "http", "scheme": "bearer", "description": "the token in the variable [api].write_token_env names" },
                "readToken": { "type": "http", "scheme": "bearer", "description": "the token in the variable [api].read_token_env names, when set" }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": { "type": "string", "description": "what went wrong, naming the input or the part that failed" } }
                }
            }
        }
    })
}

/// `GET /v1/openapi.json`.
pub(crate) async fn document_handler() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mounted_route_is_documented_and_every_documented_route_is_mounted() {
        let mounted: Vec<(String, String)> = crate::api::routes()
            .mounted()
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let documented: Vec<(String, String)> = OPERATIONS
            .iter()
            // Mounted by chat-ops' and the dead-letter module's own routers.
            .filter(|o| o.path != "/v1/chat" && !o.path.starts_with("/v1/dlq"))
            .map(|o| (o.method.to_string(), o.path.to_string()))
            .collect();
        for m in &mounted {
            assert!(
                documented.contains(m),
                "{m:?} is mounted but not in the OpenAPI document"
            );
        }
        for d in &documented {
            assert!(mounted.contains(d), "{d:?} is documented but not mounted");
        }
    }

    #[test]
    fn the_document_is_openapi_3_with_every_operation() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.0.3");
        for o in OPERATIONS {
            let op = &doc["paths"][o.path][o.method.to_lowercase()];
            assert!(op["summary"].is_string(), "{} {} missing", o.method, o.path);
        }
        let approve = &doc["paths"]["/v1/proposals/{id}/approve"]["post"];
        assert_eq!(approve["security"][0]["writeToken"], json!([]));
    }
}
