//! One client connection: reads pipelined v4 frames, dispatches each request to the engine, writes answers.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use cassandra_protocol::compression::Compression;
use cassandra_protocol::consistency::Consistency;
use cassandra_protocol::frame::message_batch::{BatchQuerySubj, BatchType};
use cassandra_protocol::frame::message_error::{
    ErrorBody, ErrorType, UnavailableError, UnpreparedError, WriteTimeoutError, WriteType,
};
use cassandra_protocol::frame::message_request::RequestBody;
use cassandra_protocol::frame::message_result::{
    BodyResResultPrepared, BodyResResultRows, BodyResResultSetKeyspace, ColSpec, PreparedMetadata,
    ResResultBody, RowsMetadata, RowsMetadataFlags, TableSpec,
};
use cassandra_protocol::frame::message_supported::BodyResSupported;
use cassandra_protocol::frame::{Direction, Envelope, Flags, Opcode, Serialize, Version};
use cassandra_protocol::query::QueryValues;
use cassandra_protocol::types::value::Value;
use cassandra_protocol::types::{CBytes, CBytesShort};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::capacity::Admission;
use super::exec::{Engine, Failure, Outcome, Prepared, RowSet};
use super::faults::WriteFault;

/// Frames above this are refused and the connection closed (Cassandra's default is 16 MiB; ours is larger
/// so that the mutation-size check, not the framing, rejects big single-partition batches).
const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
const HEADER: usize = 9;

/// Per-connection state: the `USE`d keyspace and the prepared statements this connection has used.
struct Session {
    keyspace: Option<String>,
    prepared: HashMap<Vec<u8>, Arc<Prepared>>,
}

/// Serves one connection until the client hangs up, a frame is malformed, or `cancel` fires.
pub async fn serve(stream: TcpStream, engine: Arc<Engine>, cancel: CancellationToken) {
    let peer = stream.peer_addr().ok();
    if let Err(error) = serve_inner(stream, engine, cancel).await {
        tracing::debug!(?peer, %error, "cql connection ended");
    }
}

async fn serve_inner(
    stream: TcpStream,
    engine: Arc<Engine>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut reader, writer) = stream.into_split();
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut session = Session {
        keyspace: None,
        prepared: HashMap::new(),
    };
    // Answers the capacity model holds back come here when their time is up; answers may leave out of order,
    // as on a real node, since each carries its request's stream id.
    let (late_tx, mut late_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    loop {
        while buf.len() >= HEADER {
            let len = i32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
            if len < 0 || len as usize > MAX_FRAME_BYTES {
                return Err(std::io::Error::other(format!(
                    "frame length {len} out of range"
                )));
            }
            if buf.len() < HEADER + len as usize {
                buf.reserve(HEADER + len as usize - buf.len());
                break;
            }
            let frame = buf.split_to(HEADER + len as usize);
            let answer = handle(&frame, &engine, &mut session);
            match answer.at {
                None => writer.write_all(&answer.bytes).await?,
                Some(at) => {
                    let late = late_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at).await;
                        // The connection may be gone by then; its client no longer waits for the answer.
                        let _ = late.send(answer.bytes);
                    });
                }
            }
            if answer.close {
                writer.flush().await?;
                return Ok(());
            }
        }
        writer.flush().await?;
        tokio::select! {
            read = reader.read_buf(&mut buf) => {
                if read? == 0 {
                    return Ok(());
                }
            }
            Some(bytes) = late_rx.recv() => {
                writer.write_all(&bytes).await?;
                while let Ok(bytes) = late_rx.try_recv() {
                    writer.write_all(&bytes).await?;
                }
            }
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}

/// One answer: the frame, when to send it (`None`: at once), and whether to close the connection after it.
struct Answer {
    bytes: Vec<u8>,
    at: Option<Instant>,
    close: bool,
}

impl Answer {
    fn now(bytes: Vec<u8>, close: bool) -> Answer {
        Answer {
            bytes,
            at: None,
            close,
        }
    }
}

/// Charges a write to the capacity model, if there is one, booking its worker time to `table()` (only built when
/// there is a model): `Ok(None)` runs it now and answers now,
/// `Ok(Some(at))` runs it now and answers at `at`, `Err` answers with the failure (at the time given) instead.
fn admit(
    engine: &Engine,
    bytes: usize,
    partitions: usize,
    write_type: &'static str,
    table: impl FnOnce() -> String,
) -> Result<Option<Instant>, (Failure, Option<Instant>)> {
    let Some(capacity) = &engine.capacity else {
        return Ok(None);
    };
    let service = capacity.model().service_time(bytes, partitions);
    match capacity.admit(Instant::now(), service, &table()) {
        Admission::Run { answer_at } => Ok(Some(answer_at)),
        Admission::TimedOut { answer_at } => Err((
            Failure::Write(WriteFault::WriteTimeout, write_type),
            Some(answer_at),
        )),
        Admission::Overloaded => Err((Failure::Write(WriteFault::Overloaded, write_type), None)),
    }
}

/// Whether a simple QUERY's text is a write (the capacity model charges only writes).
fn is_write_text(query: &str) -> bool {
    let head: String = query
        .trim_start()
        .chars()
        .take(6)
        .collect::<String>()
        .to_ascii_uppercase();
    ["INSERT", "UPDATE", "DELETE", "BEGIN"]
        .iter()
        .any(|w| head.starts_with(w))
}

/// Answers one frame, at once or when the capacity model says.
fn handle(frame: &[u8], engine: &Engine, session: &mut Session) -> Answer {
    let mut at = None;
    let (bytes, close) = answer(frame, engine, session, &mut at);
    Answer {
        at,
        ..Answer::now(bytes, close)
    }
}

/// Answers one frame; the flag says whether to close the connection afterwards, `at` when to send the answer.
fn answer(
    frame: &[u8],
    engine: &Engine,
    session: &mut Session,
    at: &mut Option<Instant>,
) -> (Vec<u8>, bool) {
    let stream = i16::from_be_bytes([frame[2], frame[3]]);
    let version = frame[0] & 0x7f;
    if version != 4 || frame[0] & 0x80 != 0 {
        let message = format!(
            "Invalid or unsupported protocol version ({version}); supported versions are (4/v4)"
        );
        return (
            error_frame(stream, Failure::Protocol(message), Consistency::One),
            true,
        );
    }
    let envelope = match Envelope::from_buffer(frame, Compression::None) {
        Ok(parsed) => parsed.envelope,
        Err(e) => {
            return (
                error_frame(
                    stream,
                    Failure::Protocol(format!("malformed frame: {e}")),
                    Consistency::One,
                ),
                true,
            )
        }
    };
    let body = match envelope.request_body() {
        Ok(body) => body,
        Err(e) => {
            let message = format!("malformed {:?} request: {e}", envelope.opcode);
            return (
                error_frame(stream, Failure::Protocol(message), Consistency::One),
                false,
            );
        }
    };
    let (result, consistency) = match body {
        RequestBody::Options(_) => {
            let mut supported = BodyResSupported::default();
            supported
                .data
                .insert("CQL_VERSION".into(), vec!["3.4.5".into()]);
            supported.data.insert("COMPRESSION".into(), Vec::new());
            supported
                .data
                .insert("PROTOCOL_VERSIONS".into(), vec!["4/v4".into()]);
            return (
                frame_of(
                    stream,
                    Opcode::Supported,
                    supported.serialize_to_vec(Version::V4),
                    Vec::new(),
                ),
                false,
            );
        }
        RequestBody::Startup(_) | RequestBody::Register(_) => {
            return (
                frame_of(stream, Opcode::Ready, Vec::new(), Vec::new()),
                false,
            );
        }
        RequestBody::Query(q) => {
            let params = q.query_params;
            let keyspace = params.keyspace.clone().or_else(|| session.keyspace.clone());
            if is_write_text(&q.query) {
                // An unprepared write is not planned here, so its table is not known: it counts under `?`.
                let table = || format!("{}.?", keyspace.as_deref().unwrap_or("?"));
                match admit(engine, frame.len(), 1, "SIMPLE", table) {
                    Ok(when) => *at = when,
                    Err((failure, when)) => {
                        *at = when;
                        return (error_frame(stream, failure, params.consistency), false);
                    }
                }
            }
            let values = simple_values(params.values);
            let result = values.and_then(|v| engine.query(&q.query, keyspace.as_deref(), v));
            (
                result.map(|o| (o, params.page_size, params.paging_state)),
                params.consistency,
            )
        }
        RequestBody::Prepare(p) => {
            let keyspace = p.keyspace.clone().or_else(|| session.keyspace.clone());
            return match engine.prepare(&p.query, keyspace.as_deref()) {
                Ok(prepared) => {
                    session
                        .prepared
                        .insert(prepared.id.clone(), prepared.clone());
                    let body = ResResultBody::Prepared(prepared_body(&prepared))
                        .serialize_to_vec(Version::V4);
                    (frame_of(stream, Opcode::Result, body, Vec::new()), false)
                }
                Err(f) => (error_frame(stream, f, Consistency::One), false),
            };
        }
        RequestBody::Execute(e) => {
            let params = e.query_parameters;
            let id = e.id.into_bytes().unwrap_or_default();
            let prepared = match session.prepared.get(&id) {
                Some(p) => Some(p.clone()),
                None => engine.prepared(&id).inspect(|p| {
                    session.prepared.insert(id.clone(), p.clone());
                }),
            };
            let result = match prepared {
                None => Err(Failure::Unprepared(id)),
                Some(p) => {
                    let admitted = if p.is_write() {
                        admit(engine, frame.len(), 1, "SIMPLE", || table_of(&p))
                    } else {
                        Ok(None)
                    };
                    match admitted {
                        Ok(when) => {
                            *at = when;
                            simple_values(params.values)
                                .and_then(|v| engine.execute_prepared(&p, v))
                        }
                        Err((failure, when)) => {
                            *at = when;
                            Err(failure)
                        }
                    }
                }
            };
            (
                result.map(|o| (o, params.page_size, params.paging_state)),
                params.consistency,
            )
        }
        RequestBody::Batch(b) => {
            let logged = b.batch_type == BatchType::Logged;
            let mut items = Vec::with_capacity(b.queries.len());
            let mut failure = None;
            for q in b.queries {
                let values = match simple_values(Some(q.values)) {
                    Ok(v) => v,
                    Err(f) => {
                        failure = Some(f);
                        break;
                    }
                };
                let prepared = match q.subject {
                    BatchQuerySubj::PreparedId(id) => {
                        let id = id.into_bytes().unwrap_or_default();
                        let known = session.prepared.get(&id).cloned();
                        match known.or_else(|| engine.prepared(&id)) {
                            Some(p) => {
                                session.prepared.entry(id).or_insert_with(|| p.clone());
                                p
                            }
                            None => {
                                failure = Some(Failure::Unprepared(id));
                                break;
                            }
                        }
                    }
                    BatchQuerySubj::QueryString(text) => {
                        let keyspace = b.keyspace.clone().or_else(|| session.keyspace.clone());
                        match engine.prepare(&text, keyspace.as_deref()) {
                            Ok(p) => p,
                            Err(f) => {
                                failure = Some(f);
                                break;
                            }
                        }
                    }
                };
                items.push((prepared, values));
            }
            let write_type = if logged { "BATCH" } else { "UNLOGGED_BATCH" };
            let result = match failure {
                Some(f) => Err(f),
                None => match admit(engine, frame.len(), partitions(&items), write_type, || {
                    items
                        .first()
                        .map_or_else(|| "?.?".to_string(), |(p, _)| table_of(p))
                }) {
                    Ok(when) => {
                        *at = when;
                        engine.batch(items, logged)
                    }
                    Err((failure, when)) => {
                        *at = when;
                        Err(failure)
                    }
                },
            };
            (result.map(|o| (o, None, None)), b.consistency)
        }
        RequestBody::AuthResponse(_) => (
            Err(Failure::Protocol("authentication is not enabled".into())),
            Consistency::One,
        ),
        _ => (
            Err(Failure::Protocol(format!(
                "unexpected opcode {:?}",
                envelope.opcode
            ))),
            Consistency::One,
        ),
    };
    match result {
        Err(f) => (error_frame(stream, f, consistency), false),
        Ok((Outcome::Void { warnings }, _, _)) => (
            frame_of(
                stream,
                Opcode::Result,
                ResResultBody::Void.serialize_to_vec(Version::V4),
                warnings,
            ),
            false,
        ),
        Ok((Outcome::SetKeyspace(ks), _, _)) => {
            session.keyspace = Some(ks.clone());
            let body = ResResultBody::SetKeyspace(BodyResResultSetKeyspace::new(ks))
                .serialize_to_vec(Version::V4);
            (frame_of(stream, Opcode::Result, body, Vec::new()), false)
        }
        Ok((Outcome::Rows(rows), page_size, paging_state)) => {
            let offset = paging_state
                .and_then(|p| p.into_bytes())
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map_or(0, u64::from_be_bytes) as usize;
            let page = page_size.filter(|&n| n > 0).map(|n| n as usize);
            let body =
                ResResultBody::Rows(rows_body(rows, offset, page)).serialize_to_vec(Version::V4);
            (frame_of(stream, Opcode::Result, body, Vec::new()), false)
        }
    }
}

/// Distinct partitions a batch writes to: its statements' tables with their bound partition key values.
/// `keyspace.table` of an INSERT, `?.?` for anything else.
fn table_of(prepared: &Prepared) -> String {
    prepared
        .insert_table()
        .map_or_else(|| "?.?".to_string(), |(ks, t)| format!("{ks}.{t}"))
}

fn partitions(items: &[(Arc<Prepared>, Vec<Value>)]) -> usize {
    let mut seen = std::collections::HashSet::new();
    for (prepared, values) in items {
        let key: Vec<Option<&[u8]>> = prepared
            .pk_indexes
            .iter()
            .map(|&i| match values.get(i as usize) {
                Some(Value::Some(bytes)) => Some(bytes.as_slice()),
                _ => None,
            })
            .collect();
        seen.insert((prepared.insert_table(), key));
    }
    seen.len().max(1)
}

fn simple_values(values: Option<QueryValues>) -> Result<Vec<Value>, Failure> {
    match values {
        None => Ok(Vec::new()),
        Some(QueryValues::SimpleValues(v)) => Ok(v),
        Some(QueryValues::NamedValues(_)) => Err(Failure::Invalid(
            "named bind values are not supported".into(),
        )),
    }
}

fn col_specs(
    keyspace: &str,
    table: &str,
    columns: &[(String, super::types::CqlType)],
) -> Vec<ColSpec> {
    columns
        .iter()
        .map(|(name, ty)| ColSpec {
            table_spec: Some(TableSpec {
                ks_name: keyspace.to_string(),
                table_name: table.to_string(),
            }),
            name: name.clone(),
            col_type: ty.wire(),
        })
        .collect()
}

fn prepared_body(p: &Prepared) -> BodyResResultPrepared {
    let bind_specs = p
        .binds
        .iter()
        .map(|s| ColSpec {
            table_spec: Some(TableSpec {
                ks_name: s.keyspace.clone(),
                table_name: s.table.clone(),
            }),
            name: s.name.clone(),
            col_type: s.ty.wire(),
        })
        .collect();
    let result_metadata = match &p.result {
        Some((ks, table, columns)) => RowsMetadata {
            flags: RowsMetadataFlags::empty(),
            columns_count: columns.len() as i32,
            paging_state: None,
            new_metadata_id: None,
            global_table_spec: None,
            col_specs: col_specs(ks, table, columns),
        },
        None => RowsMetadata {
            flags: RowsMetadataFlags::NO_METADATA,
            columns_count: 0,
            paging_state: None,
            new_metadata_id: None,
            global_table_spec: None,
            col_specs: Vec::new(),
        },
    };
    BodyResResultPrepared {
        id: CBytesShort::new(p.id.clone()),
        result_metadata_id: None,
        metadata: PreparedMetadata {
            pk_indexes: p.pk_indexes.clone(),
            global_table_spec: None,
            col_specs: bind_specs,
        },
        result_metadata,
    }
}

fn rows_body(rows: RowSet, offset: usize, page: Option<usize>) -> BodyResResultRows {
    let total = rows.rows.len();
    let end = page.map_or(total, |n| offset.saturating_add(n).min(total));
    let more = end < total;
    let content: Vec<Vec<CBytes>> = rows
        .rows
        .into_iter()
        .skip(offset)
        .take(end.saturating_sub(offset))
        .map(|row| {
            row.into_iter()
                .map(|c| c.map_or_else(CBytes::new_null, CBytes::new))
                .collect()
        })
        .collect();
    BodyResResultRows {
        metadata: RowsMetadata {
            flags: if more {
                RowsMetadataFlags::HAS_MORE_PAGES
            } else {
                RowsMetadataFlags::empty()
            },
            columns_count: rows.columns.len() as i32,
            paging_state: more.then(|| CBytes::new((end as u64).to_be_bytes().to_vec())),
            new_metadata_id: None,
            global_table_spec: None,
            col_specs: col_specs(&rows.keyspace, &rows.table, &rows.columns),
        },
        rows_count: content.len() as i32,
        rows_content: content,
        protocol_version: Version::V4,
    }
}

fn error_frame(stream: i16, failure: Failure, cl: Consistency) -> Vec<u8> {
    let (message, ty) = match failure {
        Failure::Syntax(m) => (m, ErrorType::Syntax),
        Failure::Invalid(m) => (m, ErrorType::Invalid),
        Failure::Protocol(m) => (m, ErrorType::Protocol),
        Failure::Unprepared(id) => (
            format!("Prepared query with ID {} not found", hex::encode(&id)),
            ErrorType::Unprepared(UnpreparedError {
                id: CBytesShort::new(id),
            }),
        ),
        Failure::Write(WriteFault::WriteTimeout, write_type) => (
            format!("Operation timed out - received only 0 responses (write type {write_type})"),
            ErrorType::WriteTimeout(WriteTimeoutError {
                cl,
                received: 0,
                block_for: 1,
                write_type: match write_type {
                    "SIMPLE" => WriteType::Simple,
                    "BATCH" => WriteType::Batch,
                    _ => WriteType::UnloggedBatch,
                },
                contentions: None,
            }),
        ),
        Failure::Write(WriteFault::Overloaded, _) => {
            ("Server is overloaded".to_string(), ErrorType::Overloaded)
        }
        Failure::Write(WriteFault::Unavailable, _) => (
            "Cannot achieve consistency level".to_string(),
            ErrorType::Unavailable(UnavailableError {
                cl,
                required: 1,
                alive: 0,
            }),
        ),
    };
    let body = ErrorBody { message, ty }.serialize_to_vec(Version::V4);
    frame_of(stream, Opcode::Error, body, Vec::new())
}

fn frame_of(stream: i16, opcode: Opcode, body: Vec<u8>, warnings: Vec<String>) -> Vec<u8> {
    let flags = if warnings.is_empty() {
        Flags::empty()
    } else {
        Flags::WARNING
    };
    let envelope = Envelope::new(
        Version::V4,
        Direction::Response,
        flags,
        opcode,
        stream,
        body,
        None,
        warnings,
    );
    // Encoding only fails for a tracing flag without a tracing id, which this server never sets.
    envelope.encode_with(Compression::None).unwrap_or_default()
}
