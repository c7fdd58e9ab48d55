//! The options every client command shares (router URL, realm, serializer,
//! authentication) and joining the realm with them, with errors that say
//! what went wrong.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use std::sync::Arc;
use switchyard_client::transport::TransportOptions;

use switchyard_client::reconnect::{Connector, Status};
use switchyard_client::{
    Credentials, Error, ReconnectOptions, ReconnectingSession, Serializer, Session, SessionOptions,
    TransportError,
};

use super::{CliError, EXIT_CONNECTION, EXIT_REFUSED, EXIT_USAGE};

/// The serializer to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SerializerArg {
    Json,
    Msgpack,
    Cbor,
}

impl From<SerializerArg> for Serializer {
    fn from(s: SerializerArg) -> Serializer {
        match s {
            SerializerArg::Json => Serializer::Json,
            SerializerArg::Msgpack => Serializer::MsgPack,
            SerializerArg::Cbor => Serializer::Cbor,
        }
    }
}

/// Like [`parse_duration`], also accepting `0` (off).
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("\"{text}\": {e} (examples: 0, 500ms, 5s, 2m)"))
}

/// Parses `5s`, `500ms`, `2m`, `1h 30m` (humantime).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("\"{text}\": {e} (examples: 500ms, 5s, 2m)"))?;
    if d.is_zero() {
        return Err(format!("\"{text}\": must be more than zero"));
    }
    Ok(d)
}

/// Connection and authentication options, shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// The router: ws://HOST:PORT/PATH (WebSocket), wss://HOST:PORT/PATH
    /// (WebSocket over TLS), rs://HOST:PORT or tcp://HOST:PORT (RawSocket
    /// over TCP), unix:/PATH (RawSocket over a Unix socket).
    #[arg(
        long,
        env = "SWITCHYARD_URL",
        default_value = "ws://127.0.0.1:8080/ws",
        value_name = "URL"
    )]
    pub url: String,

    /// The realm to join.
    #[arg(long, env = "SWITCHYARD_REALM", default_value = "realm1")]
    pub realm: String,

    /// Serializer: json, msgpack or cbor.
    #[arg(long, value_enum, default_value = "json")]
    pub serializer: SerializerArg,

    /// The authentication id (user name) for ticket and WAMP-CRA; optional
    /// for cryptosign (the router finds the key).
    #[arg(long, env = "SWITCHYARD_AUTHID")]
    pub authid: Option<String>,

    /// Authenticate with this ticket. Prefer the environment variable:
    /// command-line arguments are visible to other local users.
    #[arg(
        long,
        env = "SWITCHYARD_TICKET",
        hide_env_values = true,
        value_name = "TICKET"
    )]
    pub ticket: Option<String>,

    /// Authenticate with WAMP-CRA using this secret (salted challenges are
    /// answered with the PBKDF2-derived key, as Autobahn does). Prefer the
    /// environment variable.
    #[arg(
        long,
        env = "SWITCHYARD_WAMPCRA_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub wampcra_secret: Option<String>,

    /// Authenticate with WAMP-Cryptosign using the Ed25519 private key in
    /// FILE: the 32-byte seed as 64 hex characters.
    #[arg(long, env = "SWITCHYARD_CRYPTOSIGN_KEY", value_name = "FILE")]
    pub cryptosign_key: Option<PathBuf>,

    /// wss://: also trust the CA certificate(s) in this PEM file (for a
    /// router with a self-signed or private-CA certificate), besides the
    /// system's CA bundle. The router's certificate is always verified.
    #[arg(long, env = "SWITCHYARD_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,

    /// How long connecting and joining may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,

    /// Keepalive: ping the router when it has been silent this long (0: never).
    #[arg(long, default_value = "30s", value_parser = parse_duration_or_zero, value_name = "DURATION")]
    pub ping_interval: Duration,

    /// A router silent for --ping-interval plus this is taken for dead: the
    /// connection is dropped (and subscribe, register and worker reconnect).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub ping_timeout: Duration,
}

impl ConnectArgs {
    /// The credentials from the options (reading the key file).
    pub fn credentials(&self) -> Result<Credentials, CliError> {
        let mut c = Credentials::new();
        if let Some(id) = &self.authid {
            c = c.authid(id.as_str());
        }
        if let Some(t) = &self.ticket {
            c = c.ticket(t.as_str());
        }
        if let Some(s) = &self.wampcra_secret {
            c = c.wampcra(s.as_str());
        }
        if let Some(path) = &self.cryptosign_key {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::usage(format!(
                    "--cryptosign-key: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            c = c.cryptosign_hex(&text).map_err(|e| {
                CliError::usage(format!("--cryptosign-key {}: {e}", path.display()))
            })?;
        }
        let needs_authid = self.ticket.is_some() || self.wampcra_secret.is_some();
        if needs_authid && self.authid.is_none() {
            return Err(CliError::usage(
                "--ticket and --wampcra-secret need --authid (or SWITCHYARD_AUTHID)",
            ));
        }
        Ok(c)
    }

    /// Connects and joins the realm. `event_queue` bounds each subscription's
    /// unread events (see [`SessionOptions::event_queue`]).
    pub async fn connect(&self, event_queue: Option<usize>) -> Result<Session, CliError> {
        let creds = self.checked_credentials()?;
        self.join(&creds, event_queue)
            .await
            .map_err(|e| self.join_error(&creds, e))
    }

    /// Like [`ConnectArgs::connect`], for the long-running commands: a
    /// session that reconnects (with backoff and jitter, re-subscribing and
    /// re-registering) when the router restarts or the connection breaks,
    /// unless `reconnect` is false. The first connection's failure is
    /// returned as from `connect`; later ones are reported on standard
    /// error (unless `quiet`) while it tries again.
    pub async fn connect_reconnecting(
        &self,
        event_queue: Option<usize>,
        reconnect: bool,
        quiet: bool,
    ) -> Result<ReconnectingSession, CliError> {
        let creds = self.checked_credentials()?;
        let args = Arc::new(self.clone());
        let c = Arc::new(creds.clone());
        let connector: Connector = Arc::new(move || {
            let (args, c) = (Arc::clone(&args), Arc::clone(&c));
            Box::pin(async move { args.join(&c, event_queue).await })
        });
        let options = ReconnectOptions {
            enabled: reconnect,
            ..ReconnectOptions::default()
        };
        let rs = ReconnectingSession::start(connector, options)
            .await
            .map_err(|e| self.join_error(&creds, e))?;
        if !quiet {
            tokio::spawn(report(rs.status(), self.url.clone()));
        }
        Ok(rs)
    }

    /// The credentials, with their warnings and the CA file checked.
    fn checked_credentials(&self) -> Result<Credentials, CliError> {
        let creds = self.credentials()?;
        warn_secrets_on_command_line(self);
        if let Some(path) = &self.ca_file {
            // An unusable file is a command-line error, whatever the URL.
            switchyard_client::tls::read_ca_file(path)
                .map_err(|e| CliError::usage(format!("--ca-file: {}", tls_message(&e))))?;
        }
        Ok(creds)
    }

    async fn join(
        &self,
        creds: &Credentials,
        event_queue: Option<usize>,
    ) -> Result<Session, Error> {
        let mut opts = SessionOptions::new(self.serializer.into());
        opts.transport = TransportOptions::new(self.serializer.into());
        opts.transport.ca_file = self.ca_file.clone();
        opts.timeout = self.connect_timeout;
        opts.event_queue = event_queue;
        opts.ping_interval = self.ping_interval;
        opts.ping_timeout = self.ping_timeout;
        let opts = creds.apply(opts);
        Session::connect_with(&self.url, &self.realm, opts).await
    }

    fn join_error(&self, creds: &Credentials, e: Error) -> CliError {
        let url = &self.url;
        let realm = &self.realm;
        let offered = match creds.methods() {
            m if m.is_empty() => "anonymous".to_owned(),
            m => m.join(", "),
        };
        match e {
            Error::Abort {
                reason, message, ..
            } => {
                let detail = match &message {
                    Some(m) => format!("{reason}: {m}"),
                    None => reason.clone(),
                };
                let text = match reason.as_str() {
                    "wamp.error.no_such_realm" => {
                        format!("the router at {url} has no realm \"{realm}\" ({detail})")
                    }
                    "wamp.error.authentication_failed" => {
                        let who = creds
                            .get_authid()
                            .map(|a| format!(" for authid \"{a}\""))
                            .unwrap_or_default();
                        format!("authentication failed{who} (offered: {offered}): {detail}")
                    }
                    "wamp.error.no_matching_auth_method" | "wamp.error.no_auth_method" => format!(
                        "the router accepts none of the authentication methods offered \
                         ({offered}): {detail}\nhint: give credentials with --authid and \
                         --ticket, --wampcra-secret or --cryptosign-key"
                    ),
                    _ => format!("the router refused to join realm \"{realm}\": {detail}"),
                };
                CliError::new(EXIT_REFUSED, text)
            }
            Error::Transport(t @ TransportError::InvalidUrl(_)) => {
                CliError::new(EXIT_USAGE, transport_error(url, &t))
            }
            Error::Transport(t) => CliError::new(EXIT_CONNECTION, transport_error(url, &t)),
            Error::Timeout(what) => CliError::new(
                EXIT_CONNECTION,
                format!(
                    "cannot connect to {url}: no answer within {} ({what})",
                    humantime::format_duration(self.connect_timeout)
                ),
            ),
            Error::Protocol(m) if m.contains("credential") || m.contains("challenge") => {
                CliError::new(EXIT_REFUSED, format!("authentication: {m}"))
            }
            Error::Send(m) => CliError::new(EXIT_USAGE, format!("cannot send: {m}")),
            other => CliError::new(
                EXIT_CONNECTION,
                format!("joining realm \"{realm}\" at {url} failed: {other}"),
            ),
        }
    }
}

fn transport_error(url: &str, e: &TransportError) -> String {
    match e {
        TransportError::InvalidUrl(u) => format!(
            "invalid router URL \"{u}\" (expected ws://HOST:PORT/PATH, wss://HOST:PORT/PATH, \
             rs://HOST:PORT, tcp://HOST:PORT or unix:/PATH)"
        ),
        TransportError::Tls(m) if m.contains("not trusted") => format!(
            "cannot connect to {url}: {m}\nhint: for a router with a self-signed or private-CA \
             certificate, give that CA's certificate with --ca-file PEM"
        ),
        TransportError::Tls(m) if m.starts_with("no trusted CA") => format!(
            "cannot connect to {url}: {m}\nhint: install the system's CA certificates (Debian: \
             ca-certificates) or give the router's CA certificate with --ca-file PEM"
        ),
        TransportError::Tls(m) => format!("cannot connect to {url}: {m}"),
        TransportError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("cannot connect to {url}: connection refused (is the router running there?)")
        }
        TransportError::Io(io)
            if io.kind() == std::io::ErrorKind::UnexpectedEof && url.starts_with("ws://") =>
        {
            format!(
                "cannot connect to {url}: the connection closed during the WebSocket upgrade\n\
                 hint: for a RawSocket port use rs://HOST:PORT"
            )
        }
        TransportError::Io(io) => format!("cannot connect to {url}: {io}"),
        TransportError::WebSocket(m) if m.contains("404") => format!(
            "cannot connect to {url}: {m}\nhint: no WebSocket endpoint at this path \
             (the router's default is /ws)"
        ),
        TransportError::WebSocket(m)
            if m.contains("status code 400") && url.starts_with("ws://") =>
        {
            format!(
                "cannot connect to {url}: {m}\nhint: if this listener uses TLS, connect with \
                 wss://{}",
                &url["ws://".len()..]
            )
        }
        TransportError::Protocol(m) if m.contains("starts with 0x48") => format!(
            "cannot connect to {url}: the port answers with HTTP, not RawSocket\n\
             hint: for a WebSocket listener use ws://HOST:PORT/PATH"
        ),
        other => format!("cannot connect to {url}: {other}"),
    }
}

fn tls_message(e: &TransportError) -> String {
    match e {
        TransportError::Tls(m) => m.clone(),
        other => other.to_string(),
    }
}

/// A note when a secret came from the command line rather than the
/// environment (only on a terminal: scripts should use the variables).
fn warn_secrets_on_command_line(a: &ConnectArgs) {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return;
    }
    for (value, var, flag) in [
        (&a.ticket, "SWITCHYARD_TICKET", "--ticket"),
        (
            &a.wampcra_secret,
            "SWITCHYARD_WAMPCRA_SECRET",
            "--wampcra-secret",
        ),
    ] {
        if value.is_some() && std::env::var_os(var).is_none() {
            eprintln!(
                "switchyard: note: {flag} on the command line is visible to other local users; \
                 prefer the {var} environment variable"
            );
        }
    }
}

/// Tells on standard error when the session is lost and when it is back.
async fn report(mut status: tokio::sync::watch::Receiver<Status>, url: String) {
    let mut lost = false;
    while status.changed().await.is_ok() {
        let now = status.borrow_and_update().clone();
        match now {
            Status::Reconnecting { attempt, error } => {
                if !lost || attempt % 10 == 0 {
                    eprintln!("switchyard: connection to {url} lost ({error}); reconnecting");
                }
                lost = true;
            }
            Status::Connected { session, .. } => {
                lost = false;
                eprintln!("switchyard: reconnected to {url} (session {session})");
            }
            Status::Closed(_) => return,
        }
    }
}
