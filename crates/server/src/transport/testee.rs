//! The WebSocket conformance testee (`[[listener]] type = "websocket-testee"`):
//! every text and binary message is sent back as it came, as Crossbar.io's
//! testee does, so that the Autobahn testsuite (`scripts/autobahn.sh`) can
//! check the router's WebSocket stack. It runs over that very stack: the
//! HTTP upgrade, the codec, its limits (`max_message_size`), PING/PONG,
//! keepalive and the outbound queue are [`super::websocket`]'s; only what is
//! done with a message differs ([`EchoReader`] instead of a WAMP session).
//!
//! The reader reads the next message only once the echo of the previous one
//! is written: the echoes keep the order of everything the peer sent
//! (a CLOSE after a message is answered after the message's echo), and a
//! peer that does not read holds at most one message in the router.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use switchyard_proto::Serializer;
use switchyard_router::outbound_queue::Batch;
use switchyard_router::{Flow, Peer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::finish_writer;
use super::websocket::{
    read_loop, write_loop, Endpoint, Framing, Message, Reader, Shared, WsRead, WsWrite,
};

/// The first byte of a queued echo: what kind of message it was.
const TEXT: u8 = 0;
const BINARY: u8 = 1;

/// Serves one upgraded testee connection until it ends.
pub(super) async fn serve(mut reader: WsRead, writer: WsWrite, ep: Endpoint, label: String) {
    let mut limits = ep.settings.outbound();
    // Echoes are not WAMP messages: not counted in the router's traffic.
    limits.traffic = None;
    // The serializer is unused (the framing is `Framing::Echo`).
    let (peer, rx) = Peer::bounded(Serializer::Json, limits, usize::MAX, label.clone());
    let span = peer.span().clone();
    async move {
        tracing::debug!("WebSocket testee connection: echoing");
        let shared = Shared::new();
        let (written_tx, written) = watch::channel(0u64);
        let writer = tokio::spawn(write_loop(
            writer,
            rx,
            peer.clone(),
            Framing::Echo,
            ep.settings.clone(),
            shared.clone(),
            Some(written_tx),
        ));
        let mut echo = EchoReader {
            peer: peer.clone(),
            stopping: ep.router.stopping().clone(),
            queued: 0,
            written,
        };
        let flow = read_loop(
            &mut reader,
            BytesMut::new(),
            &mut echo,
            &peer,
            &ep.settings,
            &shared,
            &label,
        )
        .await;
        finish_writer(flow, &peer, writer).await;
    }
    .instrument(span)
    .await
}

/// Sends every message back, one at a time.
struct EchoReader {
    peer: Arc<Peer>,
    /// The router is shutting down: close.
    stopping: CancellationToken,
    /// Echoes queued so far.
    queued: u64,
    /// Echoes written so far (the writer's count).
    written: watch::Receiver<u64>,
}

impl Reader for EchoReader {
    async fn message(&mut self, msg: Message, _batch: &mut Batch) -> Flow {
        if !self.peer.send(tag(msg)) {
            // Killed (slow consumer) or stopped: the reader ends.
            return Flow::Close;
        }
        self.queued += 1;
        let target = self.queued;
        tokio::select! {
            r = self.written.wait_for(|n| *n >= target) => {
                if r.is_err() { Flow::Close } else { Flow::Continue }
            }
            _ = self.peer.killed().cancelled() => Flow::Close,
        }
    }

    async fn expired(&self) {
        self.stopping.cancelled().await
    }
}

/// The queued form of an echo: its kind, then its payload.
fn tag(msg: Message) -> Bytes {
    let kind = if msg.text { TEXT } else { BINARY };
    let payload = msg.payload;
    let mut b = BytesMut::with_capacity(payload.len() + 1);
    b.put_u8(kind);
    b.extend_from_slice(&payload);
    b.freeze()
}

/// The message an echo queued by [`tag`] is written as.
pub(super) fn untag(frame: Bytes) -> Message {
    let payload = frame.slice(1.min(frame.len())..);
    Message {
        text: frame.first() == Some(&TEXT),
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_untag_keeps_kind_and_payload() {
        let text = |s: &'static str| Message {
            text: true,
            payload: Bytes::from_static(s.as_bytes()),
        };
        assert_eq!(untag(tag(text("héllo"))), text("héllo"));
        let b = Message {
            text: false,
            payload: Bytes::from_static(&[0, 1, 255]),
        };
        assert_eq!(untag(tag(b.clone())), b);
        assert_eq!(untag(tag(text(""))), text(""));
        assert!(!untag(Bytes::new()).text);
    }
}
