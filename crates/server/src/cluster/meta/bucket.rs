//! The cluster's sessions bucket (NATS KV). nats-server 2.9 cannot be
//! asked to create a KV bucket by async-nats 0.52 (its account-info reply
//! lacks fields the client expects), so the bucket's stream is created
//! the way the client would (`KV_<bucket>` on `$KV.<bucket>.>`, one value
//! per key, delete markers kept, new messages refused when full) and the
//! bucket is then opened on it.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

/// How long opening the bucket at start may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Opens (creating it if needed) the sessions bucket of `prefix`.
pub async fn open(client: &async_nats::Client, prefix: &str) -> Result<kv::Store, String> {
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
        num_replicas: 1,
        ..Default::default()
    };
    let fail = |e: String| {
        format!("cluster: cannot open the NATS KV bucket {bucket} (is JetStream enabled, nats-server -js?): {e}")
    };
    let open = async {
        js.get_or_create_stream(config)
            .await
            .map_err(|e| e.to_string())?;
        js.get_key_value(bucket.clone())
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(OPEN_TIMEOUT, open).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(e)) => Err(fail(e)),
        Err(_) => Err(fail(format!("no answer within {OPEN_TIMEOUT:?}"))),
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
