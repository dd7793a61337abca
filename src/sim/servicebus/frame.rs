//! AMQP 1.0 framing: protocol headers, the 8-byte frame header, and (de)coding of frame bodies.

use fe2o3_amqp_types::performatives::Performative;
use serde::{Deserialize, Serialize};
use serde_amqp::de::Deserializer;
use serde_amqp::read::IoReader;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The header that starts the SASL layer.
pub(crate) const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// The header that starts AMQP itself.
pub(crate) const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// Frame type of AMQP frames.
pub(crate) const TYPE_AMQP: u8 = 0;
/// Frame type of SASL frames.
pub(crate) const TYPE_SASL: u8 = 1;
/// The smallest max-frame-size a peer may announce (AMQP 1.0 part 2.7.1).
pub(crate) const MIN_MAX_FRAME_SIZE: usize = 512;

/// Why a frame could not be read or decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("connection closed")]
    Io(#[source] std::io::Error),
    #[error("frame header announces {size} bytes with data offset {doff}: expected 8 <= offset <= size <= {max}")]
    BadHeader { size: u32, doff: u8, max: usize },
    #[error("frame body does not decode as {what}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_amqp::Error,
    },
}

/// One frame as read off the wire; an empty body is a heartbeat.
#[derive(Debug)]
pub(crate) struct RawFrame {
    pub(crate) frame_type: u8,
    pub(crate) channel: u16,
    pub(crate) body: Vec<u8>,
}

/// Reads a protocol header.
pub(crate) async fn read_protocol_header<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<[u8; 8], FrameError> {
    let mut header = [0u8; 8];
    reader
        .read_exact(&mut header)
        .await
        .map_err(FrameError::Io)?;
    Ok(header)
}

/// Reads one frame no larger than `max_frame_size`.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_size: usize,
) -> Result<RawFrame, FrameError> {
    let mut header = [0u8; 8];
    reader
        .read_exact(&mut header)
        .await
        .map_err(FrameError::Io)?;
    let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let doff = header[4];
    let offset = usize::from(doff) * 4;
    if offset < 8 || (size as usize) < offset || size as usize > max_frame_size {
        return Err(FrameError::BadHeader {
            size,
            doff,
            max: max_frame_size,
        });
    }
    let mut rest = vec![0u8; size as usize - 8];
    reader.read_exact(&mut rest).await.map_err(FrameError::Io)?;
    let body = rest.split_off(offset - 8);
    Ok(RawFrame {
        frame_type: header[5],
        channel: u16::from_be_bytes([header[6], header[7]]),
        body,
    })
}

/// Splits an AMQP frame body into its performative and the payload that follows it (transfers only).
pub(crate) fn decode_performative(body: &[u8]) -> Result<(Performative, &[u8]), FrameError> {
    let mut rest = body;
    let performative = {
        let mut de = Deserializer::new(IoReader::new(&mut rest));
        Performative::deserialize(&mut de).map_err(|source| FrameError::Decode {
            what: "a performative",
            source,
        })?
    };
    Ok((performative, rest))
}

/// Decodes a SASL frame body as `T`.
pub(crate) fn decode_sasl<'de, T: Deserialize<'de>>(
    body: &'de [u8],
    what: &'static str,
) -> Result<T, FrameError> {
    serde_amqp::from_slice(body).map_err(|source| FrameError::Decode { what, source })
}

/// Encodes a frame: header, the encoded `body` value and then `payload`.
pub(crate) fn encode_frame<T: Serialize>(
    frame_type: u8,
    channel: u16,
    body: &T,
    payload: &[u8],
) -> Result<Vec<u8>, serde_amqp::Error> {
    let encoded = serde_amqp::to_vec(body)?;
    Ok(frame_bytes(frame_type, channel, &encoded, payload))
}

/// Assembles a frame from an already encoded performative and a payload.
pub(crate) fn frame_bytes(
    frame_type: u8,
    channel: u16,
    performative: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let size = 8 + performative.len() + payload.len();
    let mut frame = Vec::with_capacity(size);
    frame.extend_from_slice(&(size as u32).to_be_bytes());
    frame.push(2);
    frame.push(frame_type);
    frame.extend_from_slice(&channel.to_be_bytes());
    frame.extend_from_slice(performative);
    frame.extend_from_slice(payload);
    frame
}

/// An empty frame, sent to keep an idle connection alive.
pub(crate) fn heartbeat() -> Vec<u8> {
    frame_bytes(TYPE_AMQP, 0, &[], &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::definitions::Handle;
    use fe2o3_amqp_types::performatives::Transfer;

    #[tokio::test]
    async fn a_transfer_round_trips_with_its_payload() {
        let transfer = Transfer {
            handle: Handle(3),
            delivery_id: Some(7),
            delivery_tag: Some(vec![1u8; 16].into()),
            message_format: Some(0),
            settled: Some(false),
            more: true,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        };
        let bytes =
            encode_frame(TYPE_AMQP, 5, &Performative::Transfer(transfer), b"payload").unwrap();
        let frame = read_frame(&mut bytes.as_slice(), 1024).await.unwrap();
        assert_eq!((frame.frame_type, frame.channel), (TYPE_AMQP, 5));
        let (performative, payload) = decode_performative(&frame.body).unwrap();
        match performative {
            Performative::Transfer(t) => assert_eq!(
                (t.handle, t.delivery_id, t.more),
                (Handle(3), Some(7), true)
            ),
            other => panic!("expected a transfer, got {other:?}"),
        }
        assert_eq!(payload, b"payload");
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_it_is_read() {
        let bytes = frame_bytes(TYPE_AMQP, 0, &[0x40; 600], &[]);
        assert!(matches!(
            read_frame(&mut bytes.as_slice(), 512).await,
            Err(FrameError::BadHeader { .. })
        ));
    }
}
