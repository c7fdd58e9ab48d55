//! Retry policies, queue configuration and job options: parsing, validation, delay sequences.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use switchyard_queue::{
    JobOptions, NewJob, Payload, Priority, QueueConfig, RetryPolicy, Target, When,
};

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn json_policy(s: &str) -> Result<RetryPolicy, String> {
    serde_json::from_str(s).map_err(|e| e.to_string())
}

#[test]
fn none_and_once() {
    let mut r = rng();
    assert_eq!(RetryPolicy::None.next_delay(1, &mut r), None);
    let once = RetryPolicy::Once { delay: ms(500) };
    assert_eq!(once.next_delay(1, &mut r), Some(ms(500)));
    assert_eq!(once.next_delay(2, &mut r), None);
}

#[test]
fn fixed_spacing_sequence() {
    let p = RetryPolicy::Fixed {
        times: 3,
        spacing: Duration::from_secs(30),
    };
    let mut r = rng();
    let seq: Vec<_> = (1..=5).map(|n| p.next_delay(n, &mut r)).collect();
    let s = Some(Duration::from_secs(30));
    assert_eq!(seq, vec![s, s, s, None, None]);
}

#[test]
fn exponential_grows_and_caps_without_jitter() {
    let p = RetryPolicy::Exponential {
        initial: Duration::from_secs(1),
        factor: 2.0,
        cap: Duration::from_secs(10),
        jitter: 0.0,
        max_attempts: None,
    };
    let mut r = rng();
    let secs: Vec<f64> = (1..=7)
        .map(|n| p.next_delay(n, &mut r).unwrap().as_secs_f64())
        .collect();
    assert_eq!(secs, vec![1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]);
    // Huge attempt numbers never overflow: the cap holds.
    assert_eq!(
        p.next_delay(u32::MAX, &mut r),
        Some(Duration::from_secs(10))
    );
}

#[test]
fn exponential_jitter_stays_in_bounds() {
    let p = RetryPolicy::Exponential {
        initial: Duration::from_secs(1),
        factor: 3.0,
        cap: Duration::from_secs(60),
        jitter: 0.25,
        max_attempts: None,
    };
    let mut r = rng();
    for n in 1..=6u32 {
        let nominal = (3f64.powi(n as i32 - 1)).min(60.0);
        let mut lo = f64::MAX;
        let mut hi = 0f64;
        for _ in 0..2000 {
            let d = p.next_delay(n, &mut r).unwrap().as_secs_f64();
            assert!(d <= nominal + 1e-9, "attempt {n}: {d} > {nominal}");
            assert!(
                d >= nominal * 0.75 - 1e-9,
                "attempt {n}: {d} < {}",
                nominal * 0.75
            );
            lo = lo.min(d);
            hi = hi.max(d);
        }
        // The jitter is actually used: samples spread over most of the band.
        assert!(hi - lo > nominal * 0.2, "attempt {n}: spread {}", hi - lo);
    }
}

#[test]
fn exponential_own_max_attempts() {
    let p = RetryPolicy::Exponential {
        initial: ms(100),
        factor: 2.0,
        cap: Duration::from_secs(1),
        jitter: 0.0,
        max_attempts: Some(3),
    };
    let mut r = rng();
    assert_eq!(p.next_delay(1, &mut r), Some(ms(100)));
    assert_eq!(p.next_delay(2, &mut r), Some(ms(200)));
    assert_eq!(p.next_delay(3, &mut r), None);
}

#[test]
fn policy_from_json_with_human_durations() {
    let p = json_policy(
        r#"{ "kind": "exponential", "initial": "1s", "factor": 2.0, "cap": "5m", "jitter": 0.1 }"#,
    )
    .unwrap();
    assert_eq!(p, RetryPolicy::default());
    let p = json_policy(r#"{ "kind": "fixed", "times": 5, "spacing": 250 }"#).unwrap();
    assert_eq!(
        p,
        RetryPolicy::Fixed {
            times: 5,
            spacing: ms(250)
        }
    );
    let p = json_policy(r#"{ "kind": "once", "delay": "1h" }"#).unwrap();
    assert_eq!(
        p,
        RetryPolicy::Once {
            delay: Duration::from_secs(3600)
        }
    );
    let p = json_policy(r#"{ "kind": "exponential" }"#).unwrap();
    assert_eq!(p, RetryPolicy::default());
    let p = json_policy(r#"{ "kind": "none" }"#).unwrap();
    assert_eq!(p, RetryPolicy::None);
}

#[test]
fn policy_from_toml() {
    #[derive(serde::Deserialize)]
    struct Doc {
        retry: RetryPolicy,
    }
    let d: Doc =
        toml::from_str(r#"retry = { kind = "fixed", times = 3, spacing = "30s" }"#).unwrap();
    assert_eq!(
        d.retry,
        RetryPolicy::Fixed {
            times: 3,
            spacing: Duration::from_secs(30)
        }
    );
    let d: Doc = toml::from_str(
        "[retry]\nkind = \"exponential\"\ninitial = \"250ms\"\nfactor = 1.5\ncap = \"1m\"\njitter = 0.0\nmax_attempts = 4\n",
    )
    .unwrap();
    assert_eq!(
        d.retry,
        RetryPolicy::Exponential {
            initial: ms(250),
            factor: 1.5,
            cap: Duration::from_secs(60),
            jitter: 0.0,
            max_attempts: Some(4)
        }
    );
    let d: Doc = toml::from_str(r#"retry = "none""#).unwrap();
    assert_eq!(d.retry, RetryPolicy::None);
    let e = toml::from_str::<Doc>(r#"retry = { kind = "exponential", jitter = 2.0 }"#)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("jitter"), "{e}");
}

#[test]
fn policy_round_trips() {
    for p in [
        RetryPolicy::None,
        RetryPolicy::Once { delay: ms(1500) },
        RetryPolicy::Fixed {
            times: 2,
            spacing: Duration::from_secs(90),
        },
        RetryPolicy::default(),
        RetryPolicy::Exponential {
            initial: ms(10),
            factor: 1.0,
            cap: ms(10),
            jitter: 1.0,
            max_attempts: Some(9),
        },
    ] {
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(json_policy(&j).unwrap(), p, "{j}");
    }
    let j = serde_json::to_value(RetryPolicy::default()).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"kind": "exponential", "initial": "1s", "factor": 2.0, "cap": "5m", "jitter": 0.1})
    );
}

#[test]
fn policy_validation_names_the_field() {
    let cases = [
        (r#"{ "kind": "exponential", "factor": 0 }"#, "factor"),
        (r#"{ "kind": "exponential", "factor": -2 }"#, "factor"),
        (r#"{ "kind": "exponential", "factor": 0.5 }"#, "factor"),
        (r#"{ "kind": "exponential", "jitter": 1.5 }"#, "jitter"),
        (r#"{ "kind": "exponential", "jitter": -0.1 }"#, "jitter"),
        (
            r#"{ "kind": "exponential", "initial": "10s", "cap": "1s" }"#,
            "cap",
        ),
        (r#"{ "kind": "exponential", "initial": 0 }"#, "initial"),
        (
            r#"{ "kind": "exponential", "max_attempts": 0 }"#,
            "max_attempts",
        ),
        (
            r#"{ "kind": "fixed", "times": 0, "spacing": "1s" }"#,
            "times",
        ),
        (r#"{ "kind": "fixed", "spacing": "1s" }"#, "times"),
        (r#"{ "kind": "fixed", "times": 1 }"#, "spacing"),
        (r#"{ "kind": "once", "delay": "-1s" }"#, "negative"),
        (r#"{ "kind": "once", "delay": -5 }"#, "negative"),
        (r#"{ "kind": "once", "delay": "soon" }"#, "soon"),
        (r#"{ "kind": "once", "delay": "400days" }"#, "delay"),
        (r#"{ "kind": "expo" }"#, "expo"),
        (r#"{ "kind": "once", "dealy": "1s" }"#, "dealy"),
        (r#"{ "initial": "1s" }"#, "kind"),
        (r#""sometimes""#, "sometimes"),
    ];
    for (input, needle) in cases {
        let e = json_policy(input).expect_err(input);
        assert!(
            e.contains(needle),
            "{input}: `{e}` does not mention `{needle}`"
        );
    }
}

#[test]
fn queue_config_defaults_from_minimal_toml() {
    #[derive(serde::Deserialize)]
    struct Doc {
        queues: Vec<QueueConfig>,
    }
    let d: Doc = toml::from_str("[[queues]]\nname = \"pdf\"\n").unwrap();
    let q = &d.queues[0];
    assert_eq!(*q, QueueConfig::new("pdf"));
    assert_eq!(q.lease_timeout, Duration::from_secs(30));
    assert_eq!(q.max_attempts, 20);
    assert_eq!(q.concurrency, 64);
    assert_eq!(q.idempotency_window, Duration::from_secs(86400));
    assert_eq!(q.retry, RetryPolicy::default());
    assert_eq!(q.backpressure.ready, 100_000);
    assert_eq!(q.backpressure.max_wait, Duration::from_secs(10));
    q.validate().unwrap();
    let d: Doc = toml::from_str(
        "[[queues]]\nname = \"pdf\"\nbackpressure = { ready = 500, max_wait = \"2s\" }\n",
    )
    .unwrap();
    assert_eq!(d.queues[0].backpressure.ready, 500);
    assert_eq!(d.queues[0].backpressure.max_wait, Duration::from_secs(2));

    let d: Doc = toml::from_str(
        r#"
[[queues]]
name = "mail"
target = "com.example.mail.send"
retry = { kind = "fixed", times = 5, spacing = "30s" }
lease_timeout = "2m"
max_attempts = 6
concurrency = 0
rate_limit = { per_second = 10, burst = 2 }
idempotency_window = "1h"
non_retryable_errors = ["com.example.invalid", "com.example.fatal.*"]
dead_letter = { max_jobs = 100, max_age = "1day" }
max_payload_bytes = 4096

[[queues]]
name = "hooks"
target = { http = { url = "https://example.com/hook", accepted_statuses = [200, 409] } }
"#,
    )
    .unwrap();
    let m = &d.queues[0];
    m.validate().unwrap();
    assert_eq!(m.target, Some(Target::procedure("com.example.mail.send")));
    assert_eq!(m.lease_timeout, Duration::from_secs(120));
    assert_eq!(m.rate_limit.as_ref().unwrap().burst(), 2);
    assert!(m.is_non_retryable("com.example.invalid"));
    assert!(m.is_non_retryable("com.example.fatal.disk"));
    assert!(!m.is_non_retryable("com.example.invalid.sub"));
    assert!(!m.is_non_retryable("com.example.other"));
    // Built in, whatever the list.
    assert!(m.is_non_retryable(switchyard_queue::NON_RETRYABLE));
    assert!(m.is_non_retryable("switchyard.queue.non_retryable.bad_input"));
    assert!(!m.is_non_retryable("switchyard.queue.non_retryable_not"));
    let h = &d.queues[1];
    assert_eq!(
        h.target,
        Some(Target::Http {
            url: "https://example.com/hook".into(),
            method: "POST".into(),
            accepted_statuses: vec![200, 409]
        })
    );
    // Round trip through JSON (how declared queues are persisted).
    for q in &d.queues {
        let j = serde_json::to_string(q).unwrap();
        assert_eq!(&serde_json::from_str::<QueueConfig>(&j).unwrap(), q);
    }
}

#[test]
fn queue_config_validation_names_the_field() {
    let base = QueueConfig::new("q");
    let check = |f: &dyn Fn(&mut QueueConfig), field: &str| {
        let mut c = base.clone();
        f(&mut c);
        let e = c.validate().expect_err(field);
        assert!(e.field.starts_with(field), "expected {field}, got {e}");
    };
    check(&|c| c.name = String::new(), "name");
    check(&|c| c.name = "with space".into(), "name");
    check(&|c| c.name = "x".repeat(129), "name");
    check(
        &|c| c.lease_timeout = Duration::from_millis(10),
        "lease_timeout",
    );
    check(&|c| c.max_attempts = 0, "max_attempts");
    check(
        &|c| c.backpressure.max_wait = Duration::from_secs(301),
        "backpressure.max_wait",
    );
    check(
        &|c| {
            c.rate_limit = Some(switchyard_queue::RateLimit {
                per_second: 0.0,
                burst: None,
            })
        },
        "rate_limit.per_second",
    );
    check(
        &|c| {
            c.rate_limit = Some(switchyard_queue::RateLimit {
                per_second: 5.0,
                burst: Some(0),
            })
        },
        "rate_limit.burst",
    );
    check(
        &|c| c.idempotency_window = Duration::ZERO,
        "idempotency_window",
    );
    check(
        &|c| c.non_retryable_errors = vec!["".into()],
        "non_retryable_errors[0]",
    );
    check(
        &|c| c.non_retryable_errors = vec!["a.*.b".into()],
        "non_retryable_errors[0]",
    );
    check(&|c| c.max_payload_bytes = 0, "max_payload_bytes");
    check(
        &|c| {
            c.retry = RetryPolicy::Fixed {
                times: 0,
                spacing: Duration::from_secs(1),
            }
        },
        "retry.times",
    );
    check(
        &|c| c.target = Some(Target::procedure("has space")),
        "target.procedure",
    );
    check(
        &|c| {
            c.target = Some(Target::Http {
                url: "ftp://x.example".into(),
                method: "POST".into(),
                accepted_statuses: vec![],
            })
        },
        "target.http.url",
    );
    let e = toml::from_str::<QueueConfig>("name = \"q\"\nlease_timout = \"1s\"\n")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("lease_timout"), "{e}");
}

#[test]
fn queue_config_differences() {
    let a = QueueConfig::new("q");
    let mut b = a.clone();
    assert!(a.differences(&b).is_empty());
    b.max_attempts = 3;
    b.retry = RetryPolicy::None;
    assert_eq!(a.differences(&b), vec!["retry", "max_attempts"]);
}

#[test]
fn job_options_parse() {
    let o: JobOptions = serde_json::from_str(
        r#"{ "priority": "high", "run_at": "2030-01-01T00:00:00Z", "idempotency_key": "order-1",
             "retry": { "kind": "once", "delay": "5s" }, "max_attempts": 2, "result_topic": "com.example.done" }"#,
    )
    .unwrap();
    let j = NewJob::from_options(Payload::json("{}"), o).unwrap();
    assert_eq!(j.priority, Priority::HIGH);
    assert_eq!(j.when, When::At(1_893_456_000_000));
    assert_eq!(j.idempotency_key.as_deref(), Some("order-1"));
    let o: JobOptions = serde_json::from_str(r#"{ "delay": "30s", "priority": 9 }"#).unwrap();
    let j = NewJob::from_options(Payload::default(), o).unwrap();
    assert_eq!(j.when, When::Delay(Duration::from_secs(30)));
    assert_eq!(j.priority, Priority::HIGHEST);
    let o: JobOptions = serde_json::from_str(r#"{ "run_at": 1700000000000 }"#).unwrap();
    assert_eq!(
        NewJob::from_options(Payload::default(), o).unwrap().when,
        When::At(1_700_000_000_000)
    );

    for (input, needle) in [
        (r#"{ "priority": 10 }"#, "out of range"),
        (r#"{ "priority": "urgent" }"#, "urgent"),
        (r#"{ "run_at": "next tuesday" }"#, "next tuesday"),
        (r#"{ "delay": "-3s" }"#, "negative"),
        (
            r#"{ "retry": { "kind": "fixed", "times": 0, "spacing": "1s" } }"#,
            "times",
        ),
        (r#"{ "prio": 1 }"#, "prio"),
    ] {
        let e = serde_json::from_str::<JobOptions>(input)
            .expect_err(input)
            .to_string();
        assert!(e.contains(needle), "{input}: `{e}` lacks `{needle}`");
    }
    let o: JobOptions = serde_json::from_str(r#"{ "delay": "1s", "run_at": 5 }"#).unwrap();
    let e = NewJob::from_options(Payload::default(), o).unwrap_err();
    assert_eq!(e.field, "run_at");
    assert!(Priority::new(10).is_err());
    assert_eq!(Priority::parse("3").unwrap(), Priority::LOW);
}
