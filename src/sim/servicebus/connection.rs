//! One client connection: SASL, then the AMQP session and link engine (credit, transfers, dispositions).
//!
//! The engine is hand-written on the `fe2o3-amqp-types` performatives because Service Bus semantics need full
//! control of delivery tags (the 16-byte lock token) and of the outcomes the server answers settlements with.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp_types::definitions::{
    AmqpError, Error as AmqpErrorInfo, ErrorCondition, Handle, LinkError, ReceiverSettleMode, Role,
    SenderSettleMode,
};
use fe2o3_amqp_types::messaging::message::__private::{Deserializable, Serializable};
use fe2o3_amqp_types::messaging::{
    Accepted, Body, DeliveryState, Modified, Rejected, TargetArchetype,
};
use fe2o3_amqp_types::performatives::{
    Attach, Begin, ChannelMax, Close, Detach, Disposition, End, Flow, MaxFrameSize, Open,
    Performative, Transfer,
};
use fe2o3_amqp_types::primitives::{Array, Symbol, Value};
use fe2o3_amqp_types::sasl::{SaslCode, SaslInit, SaslMechanisms, SaslOutcome};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::broker::{now_ms, AddressError, AmqpMessage, Broker, LinkOwner, Settlement, Source};
use super::frame::{self, FrameError, RawFrame, AMQP_HEADER, SASL_HEADER, TYPE_AMQP, TYPE_SASL};
use super::node::{self, Node};
use super::sas::SasKey;

/// The largest frame this server accepts, and announces in `open`.
const MAX_FRAME_SIZE: usize = 65_536;
/// How long a new connection may take to finish its protocol headers and SASL.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The session incoming window this server announces, in transfer frames.
const INCOMING_WINDOW: u32 = 2_048;
/// Link credit granted to client senders; topped up when half is used.
const LINK_CREDIT: u32 = 500;
/// How long the outcome of a client's transfer is held back. `fe2o3-amqp` 0.14.1 (under `azservicebus`) records
/// an unsettled delivery only after handing its transfer to the session, so on a multi-threaded runtime an
/// in-process peer that answers within microseconds can beat that bookkeeping and the client waits forever for an
/// outcome it already received. Any real broker is at least this far away over the network.
const SENDER_OUTCOME_DELAY: Duration = Duration::from_millis(5);
/// When an outcome is sent once more, in case a loaded machine let the race above happen anyway: by then the
/// client has long recorded the delivery. A client that already has the outcome ignores the repeat (the
/// delivery is settled), and it is only repeated while the session it belongs to is still open.
const SENDER_OUTCOME_REPEAT: Duration = Duration::from_secs(1);
/// Message format of a Service Bus batch: each data section is an encoded message.
const BATCH_FORMAT: u32 = 0x8001_3700;

/// What every connection of one stand-in shares.
pub(crate) struct Shared {
    pub(crate) broker: Arc<Broker>,
    pub(crate) key: SasKey,
    pub(crate) max_message_size: u64,
}

/// Serves one TCP connection until the client closes it, it breaks, or the stand-in shuts down.
pub(crate) async fn serve(
    stream: TcpStream,
    id: u64,
    shared: Arc<Shared>,
    mut wake: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (out, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
    let write_task = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Some(bytes) = outgoing.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let handshake = tokio::select! {
        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut reader, &out)) => done,
        _ = shutdown.cancelled() => Ok(Err(HandshakeError::ShuttingDown)),
    };
    let failure = match handshake {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no handshake within {HANDSHAKE_TIMEOUT:?}")),
    };
    if let Some(error) = failure {
        tracing::debug!(connection = id, %error, "handshake failed");
        drop(out);
        let _ = write_task.await;
        return;
    }
    let (frames_tx, mut frames) = mpsc::channel::<Result<RawFrame, FrameError>>(64);
    let read_task = tokio::spawn(async move {
        loop {
            let frame = frame::read_frame(&mut reader, MAX_FRAME_SIZE).await;
            let failed = frame.is_err();
            if frames_tx.send(frame).await.is_err() || failed {
                break;
            }
        }
    });
    let mut conn = Connection::new(id, shared, out);
    loop {
        let heartbeat = conn.next_heartbeat;
        let repeat = conn.repeats.front().map(|(at, _, _)| *at);
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(Ok(frame)) => match conn.on_frame(frame) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::debug!(connection = id, error = %e, "closing connection on a protocol error");
                        conn.close(Some(AmqpErrorInfo::new(AmqpError::DecodeError, e.to_string(), None)));
                        break;
                    }
                },
                Some(Err(e)) => {
                    tracing::debug!(connection = id, error = %e, "connection ended");
                    break;
                }
                None => break,
            },
            changed = wake.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep_until(heartbeat.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))), if heartbeat.is_some() => {
                conn.heartbeat();
            }
            _ = tokio::time::sleep_until(repeat.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))), if repeat.is_some() => {
                conn.repeat_outcomes();
            }
            _ = shutdown.cancelled() => {
                conn.close(None);
                break;
            }
        }
        conn.pump();
    }
    read_task.abort();
    conn.release_all();
    drop(conn);
    let _ = tokio::time::timeout(Duration::from_secs(2), write_task).await;
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("unexpected protocol header {0:?}")]
    BadHeader([u8; 8]),
    #[error("failed to encode a sasl frame")]
    Encode(#[source] serde_amqp::Error),
    #[error("the stand-in is shutting down")]
    ShuttingDown,
}

/// Reads the protocol header(s) and runs SASL (ANONYMOUS or PLAIN, both accepted) when the client asks for it.
async fn handshake<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    out: &mpsc::UnboundedSender<Vec<u8>>,
) -> Result<(), HandshakeError> {
    let mut header = frame::read_protocol_header(reader).await?;
    if header == SASL_HEADER {
        let _ = out.send(SASL_HEADER.to_vec());
        let mechanisms = SaslMechanisms {
            sasl_server_mechanisms: Array(vec![Symbol::from("ANONYMOUS"), Symbol::from("PLAIN")]),
        };
        let _ = out.send(
            frame::encode_frame(TYPE_SASL, 0, &mechanisms, &[]).map_err(HandshakeError::Encode)?,
        );
        let init = frame::read_frame(reader, MAX_FRAME_SIZE).await?;
        let init: SaslInit = frame::decode_sasl(&init.body, "sasl-init")?;
        tracing::debug!(mechanism = %init.mechanism.as_str(), "sasl init");
        let outcome = SaslOutcome {
            code: SaslCode::Ok,
            additional_data: None,
        };
        let _ = out.send(
            frame::encode_frame(TYPE_SASL, 0, &outcome, &[]).map_err(HandshakeError::Encode)?,
        );
        header = frame::read_protocol_header(reader).await?;
    }
    if header != AMQP_HEADER {
        let _ = out.send(AMQP_HEADER.to_vec());
        return Err(HandshakeError::BadHeader(header));
    }
    let _ = out.send(AMQP_HEADER.to_vec());
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum ProtocolError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("unexpected {0} frame")]
    Unexpected(&'static str),
}

/// A message arriving in several transfer frames.
struct Partial {
    delivery_id: u32,
    tag: Vec<u8>,
    settled: bool,
    format: Option<u32>,
    payload: Vec<u8>,
    /// Total size seen, kept counting after the payload is dropped for being too large.
    size: usize,
}

enum LinkKind {
    /// The client sends messages to queues or topics.
    Inbound { targets: Vec<String> },
    /// The client sends requests to a node.
    Requests { node: Node },
    /// The client receives from a queue or subscription.
    Outbound { source: Source, peek_lock: bool },
    /// The client receives replies from a node at `address`.
    Replies {
        node: Node,
        address: Option<String>,
        queue: VecDeque<AmqpMessage>,
    },
}

struct Link {
    kind: LinkKind,
    /// Links we send on: credit left and our delivery count.
    credit: u32,
    delivery_count: u32,
    drain: bool,
    /// Links we receive on: deliveries we counted and credit still granted.
    received: u32,
    granted: u32,
    /// The client receives pre-settled (receive-and-delete, or settled replies).
    settle_pre: bool,
    partial: Option<Partial>,
}

/// What an unsettled delivery we sent stands for.
enum Pending {
    Locked { handle: u32, token: Uuid },
    Other { handle: u32 },
}

struct Session {
    next_outgoing_id: u32,
    next_incoming_id: u32,
    remote_incoming_window: u32,
    incoming_since_flow: u32,
    next_delivery_id: u32,
    links: BTreeMap<u32, Link>,
    unsettled: HashMap<u32, Pending>,
    /// Handles this server detached first; the client's answering detach needs no reply.
    detaching: HashSet<u32>,
}

struct Connection {
    id: u64,
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    remote_max_frame: usize,
    remote_idle: Option<Duration>,
    next_heartbeat: Option<Instant>,
    sessions: BTreeMap<u16, Session>,
    detach_generation: u64,
    /// Outcomes of client transfers to send once more, oldest first: when, on which session, what.
    repeats: VecDeque<(Instant, u16, Disposition)>,
}

fn error(condition: ErrorCondition, description: impl Into<String>) -> AmqpErrorInfo {
    AmqpErrorInfo::new(condition, Some(description.into()), None)
}

fn server_busy() -> AmqpErrorInfo {
    error(
        custom("com.microsoft:server-busy"),
        "The request was terminated because the entity is being throttled. Please wait 10 seconds and try again.",
    )
}

fn custom(condition: &str) -> ErrorCondition {
    ErrorCondition::Custom(Symbol::from(condition))
}

/// Strips `amqp://host/`, `amqps://host/` or `sb://host/` from an address, leaving the node path.
fn node_path(address: &str) -> &str {
    let path = match address.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map(|(_, p)| p).unwrap_or(""),
        None => address,
    };
    path.trim_start_matches('/')
}

fn classify_node(path: &str) -> Option<Node> {
    if path.eq_ignore_ascii_case("$cbs") {
        return Some(Node::Cbs);
    }
    let lower = path.to_ascii_lowercase();
    lower
        .strip_suffix("/$management")
        .map(|_| Node::Management(path[..path.len() - "/$management".len()].to_string()))
}

fn target_address(attach: &Attach) -> Option<String> {
    match attach.target.as_deref() {
        Some(TargetArchetype::Target(t)) => t.address.clone(),
        _ => None,
    }
}

fn source_address(attach: &Attach) -> Option<String> {
    attach.source.as_ref().and_then(|s| s.address.clone())
}

impl Connection {
    fn new(id: u64, shared: Arc<Shared>, out: mpsc::UnboundedSender<Vec<u8>>) -> Self {
        let detach_generation = shared.broker.faults.detach_generation();
        Connection {
            id,
            shared,
            out,
            remote_max_frame: MAX_FRAME_SIZE,
            remote_idle: None,
            next_heartbeat: None,
            sessions: BTreeMap::new(),
            detach_generation,
            repeats: VecDeque::new(),
        }
    }

    fn send(&self, channel: u16, performative: Performative, payload: &[u8]) {
        tracing::trace!(connection = self.id, channel, ?performative, "frame sent");
        match frame::encode_frame(TYPE_AMQP, channel, &performative, payload) {
            Ok(bytes) => {
                let _ = self.out.send(bytes);
            }
            Err(e) => tracing::error!(connection = self.id, error = %e, "failed to encode a frame"),
        }
    }

    /// Sends a frame after `delay` (at once when `None`); later frames may overtake it.
    fn send_after(&self, channel: u16, performative: Performative, delay: Option<Duration>) {
        let Some(delay) = delay else {
            return self.send(channel, performative, &[]);
        };
        match frame::encode_frame(TYPE_AMQP, channel, &performative, &[]) {
            Ok(bytes) => {
                let out = self.out.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = out.send(bytes);
                });
            }
            Err(e) => tracing::error!(connection = self.id, error = %e, "failed to encode a frame"),
        }
    }

    /// Sends the outcomes whose repeat is due, on sessions that are still open.
    fn repeat_outcomes(&mut self) {
        let now = Instant::now();
        while let Some((at, _, _)) = self.repeats.front() {
            if *at > now {
                break;
            }
            let Some((_, channel, disposition)) = self.repeats.pop_front() else {
                break;
            };
            if self.sessions.contains_key(&channel) {
                self.send(channel, Performative::Disposition(disposition), &[]);
            }
        }
    }

    fn heartbeat(&mut self) {
        let _ = self.out.send(frame::heartbeat());
        self.next_heartbeat = self.remote_idle.map(|idle| Instant::now() + idle / 2);
    }

    fn close(&self, error: Option<AmqpErrorInfo>) {
        self.send(0, Performative::Close(Close { error }), &[]);
    }

    /// Handles one frame; `Ok(false)` when the connection is closed.
    fn on_frame(&mut self, frame: RawFrame) -> Result<bool, ProtocolError> {
        if frame.body.is_empty() {
            return Ok(true);
        }
        if frame.frame_type != TYPE_AMQP {
            return Err(ProtocolError::Unexpected("sasl"));
        }
        let (performative, payload) = frame::decode_performative(&frame.body)?;
        let channel = frame.channel;
        tracing::trace!(
            connection = self.id,
            channel,
            ?performative,
            "frame received"
        );
        match performative {
            Performative::Open(open) => self.on_open(open),
            Performative::Begin(begin) => self.on_begin(channel, begin),
            Performative::Attach(attach) => self.on_attach(channel, attach),
            Performative::Flow(flow) => self.on_flow(channel, flow),
            Performative::Transfer(transfer) => self.on_transfer(channel, transfer, payload),
            Performative::Disposition(disposition) => self.on_disposition(channel, disposition),
            Performative::Detach(detach) => self.on_detach(channel, detach),
            Performative::End(_) => {
                self.end_session(channel);
                self.send(channel, Performative::End(End { error: None }), &[]);
            }
            Performative::Close(_) => {
                self.close(None);
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn on_open(&mut self, open: Open) {
        self.remote_max_frame =
            (open.max_frame_size.0 as usize).clamp(frame::MIN_MAX_FRAME_SIZE, MAX_FRAME_SIZE);
        self.remote_idle = open
            .idle_time_out
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(u64::from(ms)));
        self.next_heartbeat = self.remote_idle.map(|idle| Instant::now() + idle / 2);
        let reply = Open {
            container_id: format!("trimtab-servicebus-standin-{}", self.id),
            hostname: None,
            max_frame_size: MaxFrameSize(MAX_FRAME_SIZE as u32),
            channel_max: ChannelMax(255),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.send(0, Performative::Open(reply), &[]);
    }

    fn on_begin(&mut self, channel: u16, begin: Begin) {
        self.sessions.insert(
            channel,
            Session {
                next_outgoing_id: 0,
                next_incoming_id: begin.next_outgoing_id,
                remote_incoming_window: begin.incoming_window,
                incoming_since_flow: 0,
                next_delivery_id: 0,
                links: BTreeMap::new(),
                unsettled: HashMap::new(),
                detaching: HashSet::new(),
            },
        );
        let reply = Begin {
            remote_channel: Some(channel),
            next_outgoing_id: 0,
            incoming_window: INCOMING_WINDOW,
            outgoing_window: INCOMING_WINDOW,
            handle_max: Handle(u32::MAX),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.send(channel, Performative::Begin(reply), &[]);
    }

    fn on_attach(&mut self, channel: u16, attach: Attach) {
        let handle = attach.handle.0;
        let client_sends = attach.role == Role::Sender;
        let mut kind = if client_sends {
            self.inbound_kind(&attach)
        } else {
            self.outbound_kind(&attach)
        };
        if matches!(kind, Ok(LinkKind::Outbound { .. }))
            && self.shared.broker.faults.take_busy_receive()
        {
            // Refused like a missing entity (null source, then detach), so the client's attach itself fails.
            kind = Err(server_busy());
        }
        let reply = Attach {
            name: attach.name.clone(),
            handle: Handle(handle),
            role: if client_sends {
                Role::Receiver
            } else {
                Role::Sender
            },
            snd_settle_mode: attach.snd_settle_mode.clone(),
            // Python asks for `second` on its sender links, then waits for a settlement it never gets with it.
            rcv_settle_mode: if client_sends {
                ReceiverSettleMode::First
            } else {
                attach.rcv_settle_mode.clone()
            },
            source: if !client_sends && kind.is_err() {
                None
            } else {
                attach.source.clone()
            },
            target: if client_sends && kind.is_err() {
                None
            } else {
                attach.target.clone()
            },
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: if client_sends { None } else { Some(0) },
            max_message_size: Some(self.shared.max_message_size),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.send(channel, Performative::Attach(reply), &[]);
        let kind = match kind {
            Err(e) => {
                tracing::info!(connection = self.id, link = %attach.name, error = ?e.description, "attach refused");
                self.detach_with(channel, handle, e);
                return;
            }
            Ok(kind) => kind,
        };
        let received = attach.initial_delivery_count.unwrap_or(0);
        let link = Link {
            kind,
            credit: 0,
            delivery_count: 0,
            drain: false,
            received,
            granted: 0,
            settle_pre: attach.snd_settle_mode == SenderSettleMode::Settled,
            partial: None,
        };
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        session.links.insert(handle, link);
        if client_sends {
            self.grant_credit(channel, handle);
        }
    }

    fn inbound_kind(&self, attach: &Attach) -> Result<LinkKind, AmqpErrorInfo> {
        let address = target_address(attach).unwrap_or_default();
        let path = node_path(&address);
        if let Some(node) = classify_node(path) {
            return self
                .check_node(node)
                .map(|node| LinkKind::Requests { node });
        }
        match self.shared.broker.send_targets(path) {
            Ok(targets) => Ok(LinkKind::Inbound { targets }),
            Err(e) => Err(address_error(e, &address)),
        }
    }

    fn outbound_kind(&self, attach: &Attach) -> Result<LinkKind, AmqpErrorInfo> {
        let address = source_address(attach).unwrap_or_default();
        let path = node_path(&address);
        if let Some(node) = classify_node(path) {
            return self.check_node(node).map(|node| LinkKind::Replies {
                node,
                address: target_address(attach),
                queue: VecDeque::new(),
            });
        }
        match self.shared.broker.receive_source(path) {
            Ok(source) => Ok(LinkKind::Outbound {
                source,
                peek_lock: attach.snd_settle_mode != SenderSettleMode::Settled,
            }),
            Err(e) => Err(address_error(e, &address)),
        }
    }

    fn check_node(&self, node: Node) -> Result<Node, AmqpErrorInfo> {
        match &node {
            Node::Management(entity) if !self.shared.broker.entity_exists(entity) => Err(
                address_error(AddressError::NotFound(entity.clone()), entity),
            ),
            _ => Ok(node),
        }
    }

    fn session_flow(&self, session: &Session, handle: Option<(u32, &Link)>, echo: bool) -> Flow {
        Flow {
            next_incoming_id: Some(session.next_incoming_id),
            incoming_window: INCOMING_WINDOW,
            next_outgoing_id: session.next_outgoing_id,
            outgoing_window: INCOMING_WINDOW,
            handle: handle.map(|(h, _)| Handle(h)),
            delivery_count: handle.map(|(_, l)| {
                if l.sends() {
                    l.delivery_count
                } else {
                    l.received
                }
            }),
            link_credit: handle.map(|(_, l)| if l.sends() { l.credit } else { l.granted }),
            available: None,
            drain: handle.is_some_and(|(_, l)| l.drain),
            echo,
            properties: None,
        }
    }

    /// Tops up the credit of a link the client sends on.
    fn grant_credit(&mut self, channel: u16, handle: u32) {
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        session.incoming_since_flow = 0;
        let Some(link) = session.links.get_mut(&handle) else {
            return;
        };
        link.granted = LINK_CREDIT;
        let session = &self.sessions[&channel];
        let flow = self.session_flow(session, Some((handle, &session.links[&handle])), false);
        self.send(channel, Performative::Flow(flow), &[]);
    }

    fn on_flow(&mut self, channel: u16, flow: Flow) {
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        session.remote_incoming_window = flow
            .next_incoming_id
            .unwrap_or(0)
            .wrapping_add(flow.incoming_window)
            .wrapping_sub(session.next_outgoing_id);
        let Some(handle) = flow.handle.map(|h| h.0) else {
            if flow.echo {
                let flow = self.session_flow(&self.sessions[&channel], None, false);
                self.send(channel, Performative::Flow(flow), &[]);
            }
            return;
        };
        let Some(link) = session.links.get_mut(&handle) else {
            return;
        };
        if link.sends() {
            let limit = flow
                .delivery_count
                .unwrap_or(0)
                .wrapping_add(flow.link_credit.unwrap_or(0));
            let credit = limit.wrapping_sub(link.delivery_count);
            link.credit = if credit > u32::MAX / 2 { 0 } else { credit };
            link.drain = flow.drain;
        }
        if flow.echo {
            let session = &self.sessions[&channel];
            let flow = self.session_flow(session, Some((handle, &session.links[&handle])), false);
            self.send(channel, Performative::Flow(flow), &[]);
        }
    }

    fn on_transfer(&mut self, channel: u16, transfer: Transfer, payload: &[u8]) {
        let max = self.shared.max_message_size as usize;
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        session.next_incoming_id = session.next_incoming_id.wrapping_add(1);
        session.incoming_since_flow += 1;
        let window_low = session.incoming_since_flow > INCOMING_WINDOW / 2;
        let handle = transfer.handle.0;
        let Some(link) = session.links.get_mut(&handle) else {
            return;
        };
        let partial = link.partial.get_or_insert_with(|| Partial {
            delivery_id: transfer.delivery_id.unwrap_or(0),
            tag: transfer
                .delivery_tag
                .as_ref()
                .map(|t| t.to_vec())
                .unwrap_or_default(),
            settled: false,
            format: transfer.message_format,
            payload: Vec::new(),
            size: 0,
        });
        partial.settled |= transfer.settled.unwrap_or(false);
        partial.size += payload.len();
        if partial.size <= max {
            partial.payload.extend_from_slice(payload);
        } else {
            partial.payload = Vec::new();
        }
        if transfer.aborted {
            link.partial = None;
            return;
        }
        if transfer.more {
            if window_low {
                let flow = self.session_flow(&self.sessions[&channel], None, false);
                self.send(channel, Performative::Flow(flow), &[]);
                if let Some(s) = self.sessions.get_mut(&channel) {
                    s.incoming_since_flow = 0;
                }
            }
            return;
        }
        let Some(delivery) = link.partial.take() else {
            return;
        };
        link.received = link.received.wrapping_add(1);
        link.granted = link.granted.saturating_sub(1);
        let low_credit = link.granted < LINK_CREDIT / 2;
        let outcome = match &link.kind {
            LinkKind::Inbound { targets } => {
                let targets = targets.clone();
                self.accept_messages(&targets, &delivery, max)
            }
            LinkKind::Requests { node } => {
                let node = node.clone();
                self.answer_request(&node, &delivery)
            }
            _ => DeliveryState::Rejected(Rejected {
                error: Some(error(
                    AmqpError::NotAllowed.into(),
                    "this link does not accept transfers",
                )),
            }),
        };
        tracing::trace!(connection = self.id, tag = ?delivery.tag, "transfer received");
        if !delivery.settled {
            let disposition = Disposition {
                role: Role::Receiver,
                first: delivery.delivery_id,
                last: None,
                settled: true,
                state: Some(outcome),
                batchable: false,
            };
            self.repeats.push_back((
                Instant::now() + SENDER_OUTCOME_REPEAT,
                channel,
                disposition.clone(),
            ));
            self.send_after(
                channel,
                Performative::Disposition(disposition),
                Some(SENDER_OUTCOME_DELAY),
            );
        }
        if low_credit || window_low {
            self.grant_credit(channel, handle);
        }
    }

    /// Stores a message (or a batch) sent to an entity; the outcome is what the client is told.
    fn accept_messages(&self, targets: &[String], delivery: &Partial, max: usize) -> DeliveryState {
        if delivery.size > max {
            return DeliveryState::Rejected(Rejected {
                error: Some(error(
                    LinkError::MessageSizeExceeded.into(),
                    format!("The received message (size {} bytes) exceeds the limit ({max} bytes) currently allowed on the link.", delivery.size),
                )),
            });
        }
        if self.shared.broker.faults.take_busy_send() {
            return DeliveryState::Rejected(Rejected {
                error: Some(server_busy()),
            });
        }
        match decode_messages(&delivery.payload, delivery.format) {
            Ok(messages) => {
                tracing::debug!(
                    connection = self.id,
                    count = messages.len(),
                    "messages enqueued"
                );
                let _ = self.shared.broker.enqueue(targets, messages);
                DeliveryState::Accepted(Accepted {})
            }
            Err(e) => DeliveryState::Rejected(Rejected {
                error: Some(error(
                    AmqpError::DecodeError.into(),
                    format!("message does not decode: {e}"),
                )),
            }),
        }
    }

    /// Answers a `$cbs` or `$management` request and queues the reply on the matching reply link.
    fn answer_request(&mut self, node: &Node, delivery: &Partial) -> DeliveryState {
        let request = match decode_messages(&delivery.payload, delivery.format) {
            Ok(mut m) if m.len() == 1 => m.remove(0),
            _ => {
                return DeliveryState::Rejected(Rejected {
                    error: Some(error(
                        AmqpError::DecodeError.into(),
                        "request does not decode as one message",
                    )),
                })
            }
        };
        let reply = match node {
            Node::Cbs => node::cbs(&request, &self.shared.key, now_ms() / 1000),
            Node::Management(entity) => node::management(&self.shared.broker, entity, &request),
        };
        let reply_to = node::reply_to(&request);
        let mut candidates = Vec::new();
        for (channel, session) in &self.sessions {
            for (handle, link) in &session.links {
                if let LinkKind::Replies {
                    node: n, address, ..
                } = &link.kind
                {
                    if n == node {
                        candidates.push((
                            *channel,
                            *handle,
                            reply_to.is_some() && *address == reply_to,
                        ));
                    }
                }
            }
        }
        let chosen = candidates
            .iter()
            .find(|c| c.2)
            .or(if candidates.len() == 1 {
                candidates.first()
            } else {
                None
            });
        match chosen {
            Some((channel, handle, _)) => {
                if let Some(LinkKind::Replies { queue, .. }) = self
                    .sessions
                    .get_mut(channel)
                    .and_then(|s| s.links.get_mut(handle))
                    .map(|l| &mut l.kind)
                {
                    queue.push_back(reply);
                }
            }
            None => tracing::warn!(
                connection = self.id,
                ?node,
                ?reply_to,
                "no reply link for a request; reply dropped"
            ),
        }
        DeliveryState::Accepted(Accepted {})
    }

    fn on_disposition(&mut self, channel: u16, disposition: Disposition) {
        if disposition.role != Role::Receiver {
            return;
        }
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        let last = disposition.last.unwrap_or(disposition.first);
        let mut replies = Vec::new();
        let mut id = disposition.first;
        loop {
            if let Some(pending) = session.unsettled.remove(&id) {
                let state = disposition.state.clone();
                let reply_state = match (&pending, settlement_of(state.as_ref())) {
                    (_, None) if !disposition.settled => {
                        // A non-terminal state: the delivery stays unsettled.
                        session.unsettled.insert(id, pending);
                        None
                    }
                    (Pending::Locked { token, .. }, Some(settlement)) => match self.shared.broker.settle(*token, settlement) {
                        // The applied outcome is echoed; an error on a `rejected` means the settlement failed, so a
                        // dead-letter that worked is confirmed as a bare `rejected`.
                        Ok(()) => match state {
                            Some(DeliveryState::Rejected(_)) => Some(DeliveryState::Rejected(Rejected { error: None })),
                            other => other,
                        },
                        Err(_) => Some(DeliveryState::Rejected(Rejected {
                            error: Some(error(
                                custom("com.microsoft:message-lock-lost"),
                                format!("The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue. Lock token: {token}"),
                            )),
                        })),
                    },
                    (Pending::Locked { token, .. }, None) => {
                        // Settled with no outcome: the lock is given up, the message comes back.
                        let _ = self.shared.broker.settle(*token, Settlement::Abandon);
                        None
                    }
                    (Pending::Other { .. }, _) => state,
                };
                if !disposition.settled {
                    if let Some(state) = reply_state {
                        replies.push((id, state));
                    }
                }
            }
            if id == last {
                break;
            }
            id = id.wrapping_add(1);
        }
        let delay = self.shared.broker.faults.settlement_delay();
        for (id, state) in replies {
            let disposition = Disposition {
                role: Role::Sender,
                first: id,
                last: None,
                settled: true,
                state: Some(state),
                batchable: false,
            };
            self.send_after(channel, Performative::Disposition(disposition), delay);
        }
    }

    fn on_detach(&mut self, channel: u16, detach: Detach) {
        let handle = detach.handle.0;
        let answered = self
            .sessions
            .get_mut(&channel)
            .is_some_and(|s| s.detaching.remove(&handle));
        let known = self
            .sessions
            .get(&channel)
            .is_some_and(|s| s.links.contains_key(&handle));
        self.drop_link(channel, handle);
        if known && !answered {
            self.send(
                channel,
                Performative::Detach(Detach {
                    handle: Handle(handle),
                    closed: true,
                    error: None,
                }),
                &[],
            );
        }
    }

    /// Detaches a link from this side with an error; the link's locks are released.
    fn detach_with(&mut self, channel: u16, handle: u32, error: AmqpErrorInfo) {
        self.drop_link(channel, handle);
        if let Some(session) = self.sessions.get_mut(&channel) {
            session.detaching.insert(handle);
        }
        self.send(
            channel,
            Performative::Detach(Detach {
                handle: Handle(handle),
                closed: true,
                error: Some(error),
            }),
            &[],
        );
    }

    /// Forgets a link and requeues what it held locked.
    fn drop_link(&mut self, channel: u16, handle: u32) {
        if let Some(session) = self.sessions.get_mut(&channel) {
            session.links.remove(&handle);
            session.unsettled.retain(|_, p| match p {
                Pending::Locked { handle: h, .. } | Pending::Other { handle: h } => *h != handle,
            });
        }
        let id = self.id;
        self.shared
            .broker
            .release(|o| o.connection == id && o.channel == channel && o.handle == handle);
    }

    fn end_session(&mut self, channel: u16) {
        self.sessions.remove(&channel);
        // A later session may reuse the channel and its delivery ids: an old outcome must not reach it.
        self.repeats.retain(|(_, c, _)| *c != channel);
        let id = self.id;
        self.shared
            .broker
            .release(|o| o.connection == id && o.channel == channel);
    }

    fn release_all(&mut self) {
        self.sessions.clear();
        let id = self.id;
        self.shared.broker.release(|o| o.connection == id);
    }

    /// Applies link faults, then sends what links with credit can take: messages, replies, drain answers.
    fn pump(&mut self) {
        self.apply_link_faults();
        let channels: Vec<u16> = self.sessions.keys().copied().collect();
        for channel in channels {
            let handles: Vec<u32> = self.sessions[&channel].links.keys().copied().collect();
            for handle in handles {
                self.pump_link(channel, handle);
            }
        }
    }

    fn apply_link_faults(&mut self) {
        let faults = self.shared.broker.faults.clone();
        let generation = faults.detach_generation();
        let forced = generation != self.detach_generation;
        self.detach_generation = generation;
        let busy = faults.receives_throttled();
        if !forced && !busy {
            return;
        }
        let mut detaches = Vec::new();
        for (channel, session) in &self.sessions {
            for (handle, link) in &session.links {
                let is_cbs = matches!(
                    &link.kind,
                    LinkKind::Requests { node: Node::Cbs }
                        | LinkKind::Replies {
                            node: Node::Cbs,
                            ..
                        }
                );
                if forced && !is_cbs {
                    detaches.push((
                        *channel,
                        *handle,
                        error(
                            LinkError::DetachForced.into(),
                            "The link was detached by the stand-in's detach fault.",
                        ),
                    ));
                } else if busy
                    && matches!(link.kind, LinkKind::Outbound { .. })
                    && faults.take_busy_receive()
                {
                    detaches.push((*channel, *handle, server_busy()));
                }
            }
        }
        for (channel, handle, e) in detaches {
            self.detach_with(channel, handle, e);
        }
    }

    fn pump_link(&mut self, channel: u16, handle: u32) {
        let owner = LinkOwner {
            connection: self.id,
            channel,
            handle,
        };
        loop {
            let Some(session) = self.sessions.get_mut(&channel) else {
                return;
            };
            if session.remote_incoming_window == 0 {
                break;
            }
            let Some(link) = session.links.get_mut(&handle) else {
                return;
            };
            if link.credit == 0 {
                break;
            }
            let settle_pre = link.settle_pre;
            let (message, token) = match &mut link.kind {
                LinkKind::Outbound { source, peek_lock } => {
                    match self.shared.broker.acquire(source, owner, *peek_lock) {
                        Some(delivery) => (delivery.message, delivery.lock_token),
                        None => break,
                    }
                }
                LinkKind::Replies { queue, .. } => match queue.pop_front() {
                    Some(reply) => (reply, None),
                    None => break,
                },
                _ => break,
            };
            link.credit -= 1;
            link.delivery_count = link.delivery_count.wrapping_add(1);
            let delivery_id = session.next_delivery_id;
            session.next_delivery_id = session.next_delivery_id.wrapping_add(1);
            let settled =
                settle_pre || (token.is_none() && matches!(link.kind, LinkKind::Outbound { .. }));
            if !settled {
                let pending = match token {
                    Some(token) => Pending::Locked { handle, token },
                    None => Pending::Other { handle },
                };
                session.unsettled.insert(delivery_id, pending);
            }
            // Service Bus tags every delivery with a GUID (clients parse it as the lock token even when settled).
            let tag = token.unwrap_or_else(Uuid::new_v4).to_bytes_le().to_vec();
            let payload = match encode_message(message) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(connection = self.id, error = %e, "a message failed to encode; its lock will expire and requeue it");
                    continue;
                }
            };
            self.send_transfer(channel, handle, delivery_id, tag, settled, &payload);
        }
        // Drain: what credit is left after sending everything available is spent, and the client is told.
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        let Some(link) = session.links.get_mut(&handle) else {
            return;
        };
        if link.drain && link.sends() {
            link.delivery_count = link.delivery_count.wrapping_add(link.credit);
            link.credit = 0;
            let session = &self.sessions[&channel];
            let flow = self.session_flow(session, Some((handle, &session.links[&handle])), false);
            self.send(channel, Performative::Flow(flow), &[]);
            if let Some(link) = self
                .sessions
                .get_mut(&channel)
                .and_then(|s| s.links.get_mut(&handle))
            {
                link.drain = false;
            }
        }
    }

    /// Sends one message, split into as many transfer frames as the client's max frame size needs.
    fn send_transfer(
        &mut self,
        channel: u16,
        handle: u32,
        delivery_id: u32,
        tag: Vec<u8>,
        settled: bool,
        payload: &[u8],
    ) {
        let first = Transfer {
            handle: Handle(handle),
            delivery_id: Some(delivery_id),
            delivery_tag: Some(tag.into()),
            message_format: Some(0),
            settled: Some(settled),
            more: false,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        };
        let continuation = Transfer {
            handle: Handle(handle),
            delivery_id: None,
            delivery_tag: None,
            message_format: None,
            settled: None,
            more: false,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        };
        let mut rest = payload;
        let mut transfer = first;
        loop {
            let mut probe = transfer.clone();
            probe.more = true;
            let overhead = serde_amqp::to_vec(&Performative::Transfer(probe))
                .map(|v| v.len())
                .unwrap_or(64)
                + 8;
            let room = self.remote_max_frame.saturating_sub(overhead).max(1);
            let (chunk, remaining) = rest.split_at(rest.len().min(room));
            transfer.more = !remaining.is_empty();
            self.send(channel, Performative::Transfer(transfer), chunk);
            if let Some(session) = self.sessions.get_mut(&channel) {
                session.next_outgoing_id = session.next_outgoing_id.wrapping_add(1);
                session.remote_incoming_window = session.remote_incoming_window.saturating_sub(1);
            }
            if remaining.is_empty() {
                break;
            }
            rest = remaining;
            transfer = continuation.clone();
        }
    }
}

impl Link {
    /// True for links this server sends on.
    fn sends(&self) -> bool {
        matches!(
            self.kind,
            LinkKind::Outbound { .. } | LinkKind::Replies { .. }
        )
    }
}

fn address_error(e: AddressError, address: &str) -> AmqpErrorInfo {
    match e {
        AddressError::NotFound(path) => error(
            AmqpError::NotFound.into(),
            format!("The messaging entity '{path}' could not be found (address '{address}')."),
        ),
        AddressError::NotSendable(path) => error(
            AmqpError::NotAllowed.into(),
            format!("Cannot send to '{path}': send to a queue or a topic."),
        ),
    }
}

/// What a settlement outcome means for a locked message; `None` for a non-terminal or missing state.
fn settlement_of(state: Option<&DeliveryState>) -> Option<Settlement> {
    match state? {
        DeliveryState::Accepted(_) => Some(Settlement::Complete),
        DeliveryState::Released(_) => Some(Settlement::Abandon),
        DeliveryState::Modified(Modified {
            undeliverable_here: Some(true),
            ..
        }) => Some(Settlement::Defer),
        DeliveryState::Modified(_) => Some(Settlement::Abandon),
        DeliveryState::Rejected(Rejected { error }) => {
            let info = error.as_ref().and_then(|e| e.info.as_deref());
            let text = |key: &str| match info.and_then(|i| i.get(&Symbol::from(key))) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Symbol(s)) => Some(s.as_str().to_string()),
                _ => None,
            };
            let reason = text("DeadLetterReason")
                .or_else(|| error.as_ref().and_then(|e| e.description.clone()));
            Some(Settlement::DeadLetter {
                reason,
                description: text("DeadLetterErrorDescription"),
            })
        }
        _ => None,
    }
}

/// Encodes a message for a transfer. The header is written by hand with every field present: the generic encoder
/// drops a trailing `delivery-count` of 0, which Python reads back as no count at all.
fn encode_message(mut message: AmqpMessage) -> Result<Vec<u8>, serde_amqp::Error> {
    let mut bytes = Vec::new();
    if let Some(header) = message.header.take() {
        let mut fields = vec![
            if header.durable { 0x41 } else { 0x42 },
            0x50,
            header.priority.0,
        ];
        match header.ttl {
            Some(ttl) => {
                fields.push(0x70);
                fields.extend_from_slice(&ttl.to_be_bytes());
            }
            None => fields.push(0x40),
        }
        fields.push(if header.first_acquirer { 0x41 } else { 0x42 });
        fields.push(0x70);
        fields.extend_from_slice(&header.delivery_count.to_be_bytes());
        // Described list8: descriptor ulong 0x70 (header), size byte (count byte + fields), count 5.
        bytes.extend_from_slice(&[0x00, 0x53, 0x70, 0xc0, (fields.len() + 1) as u8, 5]);
        bytes.extend_from_slice(&fields);
    }
    bytes.extend(serde_amqp::to_vec(&Serializable(&message))?);
    Ok(bytes)
}

/// Decodes a transfer payload: one message, or for the batch format each data section as a message.
fn decode_messages(
    payload: &[u8],
    format: Option<u32>,
) -> Result<Vec<AmqpMessage>, serde_amqp::Error> {
    let outer: Deserializable<AmqpMessage> = serde_amqp::from_slice(payload)?;
    let outer = outer.0;
    if format != Some(BATCH_FORMAT) {
        return Ok(vec![outer]);
    }
    match outer.body {
        Body::Data(sections) => sections
            .into_iter()
            .map(|section| {
                serde_amqp::from_slice::<Deserializable<AmqpMessage>>(&section.0).map(|m| m.0)
            })
            .collect(),
        _ => Ok(vec![outer]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_keeps_a_zero_delivery_count_on_the_wire() {
        let message = AmqpMessage {
            header: Some(fe2o3_amqp_types::messaging::Header {
                delivery_count: 0,
                ..Default::default()
            }),
            delivery_annotations: None,
            message_annotations: None,
            properties: None,
            application_properties: None,
            body: Body::Value(fe2o3_amqp_types::messaging::AmqpValue(Value::String(
                "x".into(),
            ))),
            footer: None,
        };
        let bytes = encode_message(message.clone()).unwrap();
        assert_eq!(&bytes[..6], &[0x00, 0x53, 0x70, 0xc0, 11, 5]);
        assert_eq!(
            &bytes[11..16],
            &[0x70, 0, 0, 0, 0],
            "delivery-count is present, as uint 0"
        );
        let decoded = decode_messages(&bytes, None).unwrap();
        assert_eq!(
            decoded[0].header.as_ref().map(|h| h.delivery_count),
            Some(0)
        );
        assert_eq!(decoded[0].body, message.body);
    }

    #[test]
    fn addresses_resolve_to_node_paths() {
        assert_eq!(node_path("amqp://127.0.0.2/q1"), "q1");
        assert_eq!(
            node_path("amqps://ns.servicebus.windows.net/t/Subscriptions/s"),
            "t/Subscriptions/s"
        );
        assert_eq!(node_path("q1/$DeadLetterQueue"), "q1/$DeadLetterQueue");
        assert_eq!(classify_node("$cbs"), Some(Node::Cbs));
        assert_eq!(
            classify_node("Q1/$management"),
            Some(Node::Management("Q1".into()))
        );
        assert_eq!(classify_node("q1"), None);
    }
}
