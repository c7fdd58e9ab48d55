//! The cluster's sessions bucket (NATS KV). nats-server 2.9 cannot be
//! asked to create a KV bucket by async-nats 0.52 (its account-info reply
//! lacks fields the client expects), so the bucket's stream is created
//! the way the client would (`KV_<bucket>` on `$KV.<bucket>.>`, one value
//! per key, delete markers kept, new messages refused when full) and the
//! bucket is then opened on it.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

/// How long opening the bucket at start may take: a NATS cluster that has
/// just started may take seconds to elect its JetStream leader.
const OPEN_WAIT: Duration = Duration::from_secs(15);

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The bucket's name for subject prefix `prefix`: `<prefix>_sessions`,
/// with every character a bucket name cannot hold (anything but
/// `A-Z a-z 0-9 _ -`, the dots of the prefix too) as `_`.
pub fn name(prefix: &str) -> String {
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{clean}_sessions")
}

/// Opens (creating it if needed) the sessions bucket of `prefix`, with
/// `replicas` copies (one per NATS server listed, at most three). A NATS
/// without JetStream is an error at once; a JetStream that does not answer
/// yet (a NATS cluster electing its leader) is asked again for up to
/// [`OPEN_WAIT`].
pub async fn open(
    client: &async_nats::Client,
    prefix: &str,
    replicas: usize,
) -> Result<kv::Store, String> {
    let bucket = name(prefix);
    let js = jetstream::new(client.clone());
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("switchyard: the cluster's sessions and subscriptions".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    };
    let fail = |e: String| {
        format!("cluster: cannot open the NATS KV bucket {bucket} (is JetStream enabled, nats-server -js?): {e}")
    };
    let deadline = tokio::time::Instant::now() + OPEN_WAIT;
    loop {
        let e = match tokio::time::timeout(ATTEMPT_TIMEOUT, js.get_or_create_stream(config.clone()))
            .await
        {
            Ok(Ok(_)) => break,
            Ok(Err(e))
                if e.kind() == jetstream::context::CreateStreamErrorKind::JetStreamUnavailable =>
            {
                return Err(fail(e.to_string()))
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {ATTEMPT_TIMEOUT:?}"),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(fail(e));
        }
        tracing::debug!("cluster: sessions bucket {bucket}: {e}; trying again");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    match tokio::time::timeout(ATTEMPT_TIMEOUT, js.get_key_value(bucket.clone())).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(_) => Err(fail(format!("no answer within {ATTEMPT_TIMEOUT:?}"))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bucket_name_holds_only_what_nats_allows() {
        assert_eq!(super::name("switchyard"), "switchyard_sessions");
        assert_eq!(super::name("app.sy-1"), "app_sy-1_sessions");
    }
}
