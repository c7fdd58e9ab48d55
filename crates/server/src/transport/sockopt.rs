//! The TCP options of the router's accepted connections: TCP_NODELAY on
//! every listener; on WAMP listeners TCP_USER_TIMEOUT and `[limits]
//! socket_send_buffer`; on RawSocket listeners TCP keepalive too.
//!
//! On Linux an accepted socket inherits these options from its listening
//! socket (the kernel copies the listener's socket, keepalive timer
//! included), so they are set once on the listener, and a connection costs
//! no `setsockopt` (a RawSocket connection made seven of them, ~4 % of the
//! router's CPU per connect-subscribe-leave cycle). Elsewhere they are set
//! on each accepted connection, as before.

use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use super::Settings;

/// Whether accepted sockets inherit the listener's options on this system.
pub const INHERITED: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// The options of one listener's connections.
#[derive(Clone, Debug, Default)]
pub struct ConnOptions {
    /// TCP keepalive: idle time before the first probe, and between probes.
    keepalive: Option<(Duration, Duration)>,
    /// TCP_USER_TIMEOUT.
    user_timeout: Option<Duration>,
    /// SO_SNDBUF.
    send_buffer: Option<usize>,
}

impl ConnOptions {
    /// TCP_NODELAY only: HTTP listeners (bridge, operations).
    pub fn plain() -> Self {
        Self::default()
    }

    /// A WebSocket listener: TCP_USER_TIMEOUT and the send buffer.
    pub fn websocket(settings: &Settings) -> Self {
        ConnOptions {
            keepalive: None,
            user_timeout: user_timeout(settings),
            send_buffer: (settings.socket_send_buffer != 0).then_some(settings.socket_send_buffer),
        }
    }

    /// A RawSocket listener: as WebSocket, and TCP keepalive.
    ///
    /// TCP keepalive finds dead RawSocket peers without RawSocket PINGs: the
    /// kernel probes after `ping_interval` of silence, every `ping_timeout /
    /// 3`, and drops the connection after three unanswered probes. Keepalive
    /// probes go out only while nothing is in flight, hence TCP_USER_TIMEOUT
    /// too.
    pub fn rawsocket(settings: &Settings) -> Self {
        let keepalive = (!settings.ping_interval.is_zero()).then(|| {
            let probe = (settings.ping_timeout / 3).max(Duration::from_secs(1));
            (settings.ping_interval, probe)
        });
        ConnOptions {
            keepalive,
            ..Self::websocket(settings)
        }
    }

    /// Sets the options on a listening socket (before `listen`); its
    /// connections inherit them where [`INHERITED`].
    pub fn apply_to_listener(&self, socket: &TcpSocket) -> std::io::Result<()> {
        socket.set_nodelay(true)?;
        self.apply(socket2::SockRef::from(socket))
    }

    /// Sets the options (but TCP_NODELAY) on an accepted connection, where
    /// it did not inherit them from its listener. Failures are logged, not
    /// fatal.
    pub fn apply_to_stream(&self, stream: &TcpStream) {
        // TCP_NODELAY: `accept::Acceptor` sets it where not inherited.
        if INHERITED {
            return;
        }
        if let Err(e) = self.apply(socket2::SockRef::from(stream)) {
            tracing::debug!("TCP options not set: {e}");
        }
    }

    fn apply(&self, sock: socket2::SockRef<'_>) -> std::io::Result<()> {
        if let Some((time, interval)) = self.keepalive {
            let ka = socket2::TcpKeepalive::new()
                .with_time(time)
                .with_interval(interval)
                .with_retries(3);
            sock.set_tcp_keepalive(&ka)?;
        }
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        if let Some(t) = self.user_timeout {
            sock.set_tcp_user_timeout(Some(t))?;
        }
        if let Some(n) = self.send_buffer {
            sock.set_send_buffer_size(n)?;
        }
        Ok(())
    }
}

/// Data the peer leaves unacknowledged for `ping_interval + ping_timeout`
/// ends the connection (TCP_USER_TIMEOUT), on every TCP connection of a
/// WAMP listener. Otherwise a peer that vanished while a message to it was
/// in flight is found only by TCP's retransmission timeout, some 15
/// minutes: RawSocket's keepalive probes stop while data is unacknowledged,
/// and a WebSocket writer waiting on a full socket cannot run its ping
/// timer. A peer that is alive but does not read answers the kernel's
/// zero-window probes and is not affected (the slow-consumer policy deals
/// with it). docs/RELIABILITY.md, "A half-open TCP connection".
///
/// The send buffer (`[limits] socket_send_buffer`) is bounded because, with
/// autotuning, Linux grows the buffer of a connection whose peer does not
/// read up to `net.ipv4.tcp_wmem`'s maximum (4 MiB): the router would copy
/// that much into the socket of every stalled subscriber before its writer
/// blocked and the slow-consumer policy could apply.
fn user_timeout(settings: &Settings) -> Option<Duration> {
    (!settings.ping_interval.is_zero()).then(|| settings.ping_interval + settings.ping_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::accept::Acceptor;
    use crate::transport::test_settings;

    /// A listener with `opts`, one connection to it, and that connection as
    /// the router accepts it (through the accept loop's `Acceptor`).
    async fn accepted(opts: &ConnOptions) -> (TcpStream, TcpStream) {
        let socket = TcpSocket::new_v4().unwrap();
        opts.apply_to_listener(&socket).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.next().await.unwrap();
        opts.apply_to_stream(&server);
        (client, server)
    }

    #[tokio::test]
    async fn a_rawsocket_connection_has_its_options_from_the_listener() {
        let mut settings = test_settings();
        settings.ping_interval = Duration::from_secs(30);
        settings.ping_timeout = Duration::from_secs(9);
        settings.socket_send_buffer = 64 << 10;
        let (_client, server) = accepted(&ConnOptions::rawsocket(&settings)).await;
        let s = socket2::SockRef::from(&server);
        assert!(server.nodelay().unwrap());
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
        assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(3));
        assert_eq!(s.tcp_keepalive_retries().unwrap(), 3);
        assert_eq!(s.tcp_user_timeout().unwrap(), Some(Duration::from_secs(39)));
        // Linux doubles the value asked for (bookkeeping overhead).
        let sndbuf = s.send_buffer_size().unwrap();
        assert!((64 << 10..=128 << 10).contains(&sndbuf), "{sndbuf}");
    }

    #[tokio::test]
    async fn a_websocket_connection_has_no_keepalive_and_plain_has_only_nodelay() {
        let settings = test_settings();
        let (_client, server) = accepted(&ConnOptions::websocket(&settings)).await;
        let s = socket2::SockRef::from(&server);
        assert!(server.nodelay().unwrap());
        assert!(!s.keepalive().unwrap());
        assert_eq!(
            s.tcp_user_timeout().unwrap(),
            Some(settings.ping_interval + settings.ping_timeout)
        );

        let (_client, server) = accepted(&ConnOptions::plain()).await;
        let s = socket2::SockRef::from(&server);
        assert!(server.nodelay().unwrap());
        assert!(!s.keepalive().unwrap());
        assert_eq!(s.tcp_user_timeout().unwrap(), None);
    }

    /// Where connections inherit the options, none is set per connection:
    /// a listener without them gives connections without them.
    #[tokio::test]
    async fn no_option_is_set_per_connection_where_they_are_inherited() {
        if !INHERITED {
            return;
        }
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await;
        let (server, _) = listener.next().await.unwrap();
        let mut settings = test_settings();
        settings.ping_interval = Duration::from_secs(30);
        ConnOptions::rawsocket(&settings).apply_to_stream(&server);
        assert!(!server.nodelay().unwrap());
        assert!(!socket2::SockRef::from(&server).keepalive().unwrap());
        drop(client);
    }
}
