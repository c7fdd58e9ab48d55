//! Exercises every session operation against a running router and prints
//! what happened; exits non-zero on the first failure.
//!
//! ```text
//! cargo run -p switchyard-client --example smoke -- ws://127.0.0.1:8080/ws rs://127.0.0.1:8081
//! ```

use std::time::Duration;

use switchyard_client::{Dict, Error, Serializer, Session, Value};

async fn smoke(url: &str, ser: Serializer) -> Result<(), String> {
    let t = |what: &str, e: Error| format!("{url} {ser}: {what}: {e}");
    let a = Session::connect(url, "realm1", ser)
        .await
        .map_err(|e| t("connect", e))?;
    let b = Session::connect(url, "realm1", ser)
        .await
        .map_err(|e| t("connect", e))?;

    // PubSub: b subscribes, a publishes with acknowledge.
    let mut sub = b
        .subscribe("smoke.topic")
        .await
        .map_err(|e| t("subscribe", e))?;
    let kw = Dict::new().with("k", "v");
    let publication = a
        .publish(
            "smoke.topic",
            vec![Value::from("hello"), Value::UInt(1)],
            kw.clone(),
            true,
        )
        .await
        .map_err(|e| t("publish", e))?;
    let ev = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .map_err(|_| format!("{url} {ser}: no event within 5 s"))?
        .ok_or_else(|| format!("{url} {ser}: event stream ended"))?;
    if Some(ev.publication) != publication {
        return Err(format!(
            "{url} {ser}: publication id {} != {publication:?}",
            ev.publication
        ));
    }
    let args = ev.args().map_err(|e| e.to_string())?;
    if args != vec![Value::from("hello"), Value::UInt(1)] || ev.kwargs().ok() != Some(kw) {
        return Err(format!("{url} {ser}: event payload {args:?}"));
    }
    b.unsubscribe(sub.id())
        .await
        .map_err(|e| t("unsubscribe", e))?;
    if tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .ok()
        .flatten()
        .is_some()
    {
        return Err(format!("{url} {ser}: event after unsubscribe"));
    }

    // RPC: b registers, a calls (result and error).
    let reg = b
        .register("smoke.add", |args: Vec<Value>, _kw: Dict| async move {
            let mut sum = 0u64;
            for v in &args {
                match v.as_u64() {
                    Some(n) => sum += n,
                    None => {
                        return Err((
                            "smoke.error.not_a_number".to_owned(),
                            vec![v.clone()],
                            Dict::new(),
                        ))
                    }
                }
            }
            Ok((vec![Value::UInt(sum)], Dict::new()))
        })
        .await
        .map_err(|e| t("register", e))?;
    let (res, _) = a
        .call(
            "smoke.add",
            vec![Value::UInt(2), Value::UInt(40)],
            Dict::new(),
        )
        .await
        .map_err(|e| format!("{url} {ser}: call: {e}"))?;
    if res != vec![Value::UInt(42)] {
        return Err(format!("{url} {ser}: call result {res:?}"));
    }
    let err = a
        .call("smoke.add", vec![Value::from("x")], Dict::new())
        .await
        .err()
        .ok_or_else(|| format!("{url} {ser}: call should fail"))?;
    if err.uri != "smoke.error.not_a_number" || err.args != vec![Value::from("x")] {
        return Err(format!("{url} {ser}: call error {err:?}"));
    }
    let err = a
        .call("smoke.nothing", vec![], Dict::new())
        .await
        .err()
        .ok_or_else(|| format!("{url} {ser}: call of unknown procedure should fail"))?;
    if err.uri != "wamp.error.no_such_procedure" {
        return Err(format!("{url} {ser}: unknown procedure gave {err:?}"));
    }
    b.unregister(reg.id).await.map_err(|e| t("unregister", e))?;

    // A bad realm is refused with ABORT.
    match Session::connect(url, "no.such.realm", ser).await {
        Err(e @ Error::Abort { .. }) => println!("  bad realm refused: {e}"),
        Err(e) => return Err(format!("{url} {ser}: bad realm gave {e}")),
        Ok(_) => return Err(format!("{url} {ser}: bad realm was accepted")),
    }

    let bye = a.leave().await.map_err(|e| t("leave", e))?;
    b.leave().await.map_err(|e| t("leave", e))?;
    println!(
        "{url} {ser}: ok (session {}, left with {})",
        a.id(),
        bye.reason
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    let urls: Vec<String> = std::env::args().skip(1).collect();
    let urls = if urls.is_empty() {
        vec![
            "ws://127.0.0.1:8080/ws".to_owned(),
            "rs://127.0.0.1:8081".to_owned(),
        ]
    } else {
        urls
    };
    let mut failed = false;
    for url in &urls {
        for ser in Serializer::ALL {
            if let Err(e) = smoke(url, ser).await {
                eprintln!("FAILED: {e}");
                failed = true;
            }
        }
    }
    std::process::exit(i32::from(failed));
}
