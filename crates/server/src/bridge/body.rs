//! Reading a bridge request's body within its limits: at most
//! `max_body_size` bytes, within `limits.http_body_timeout`, and with all
//! bodies being read or handled at once holding at most
//! `max_buffered_body_bytes` (a byte budget shared by the bridge's
//! connections), so slow or parallel large bodies cannot take the router's
//! memory.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{bad, Bridge, Refusal};

/// A request body, holding its share of the byte budget until dropped.
pub(super) struct Body {
    bytes: Bytes,
    _budget: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The byte budget of a bridge.
pub(super) fn budget(max_buffered_body_bytes: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(
        max_buffered_body_bytes.min(Semaphore::MAX_PERMITS),
    ))
}

/// Reads the body of `req`.
pub(super) async fn read_body(req: Request<Incoming>, bridge: &Bridge) -> Result<Body, Refusal> {
    let (max, timeout) = (bridge.config.max_body_size, bridge.body_timeout);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "switchyard.error.payload_too_large",
            format!("the request body exceeds the bridge's limit of {max} bytes"),
        )
    };
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let busy = || {
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "switchyard.error.busy",
            format!(
                "the bridge already holds max_buffered_body_bytes = {} bytes of request bodies; retry shortly",
                bridge.config.max_buffered_body_bytes
            ),
        )
    };
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut take = |n: usize| -> Result<(), Refusal> {
        if n == 0 {
            return Ok(());
        }
        let n = u32::try_from(n).map_err(|_| too_large())?;
        let p = bridge
            .body_budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| busy())?;
        match &mut permit {
            Some(held) => held.merge(p),
            None => permit = Some(p),
        }
        Ok(())
    };
    // A declared length is reserved at once (refused before reading).
    let mut reserved = declared.unwrap_or(0);
    take(reserved)?;
    let mut body = req.into_body();
    let mut buf = BytesMut::with_capacity(reserved.min(64 * 1024));
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| bad(format!("cannot read the request body: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            if buf.len() + data.len() > max {
                return Err(too_large());
            }
            let beyond = (buf.len() + data.len()).saturating_sub(reserved);
            take(beyond)?;
            reserved += beyond;
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        Refusal(
            StatusCode::REQUEST_TIMEOUT,
            "switchyard.error.request_timeout",
            format!(
                "the request body did not arrive within {} s (limits.http_body_timeout)",
                timeout.as_secs_f64()
            ),
        )
    })??;
    Ok(Body {
        bytes: buf.freeze(),
        _budget: permit,
    })
}
