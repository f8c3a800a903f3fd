//! The latency probe of `scripts/bench_worker.sh`: produces generated events (and their labels)
//! at a fixed rate, each stamped with the wall time at its send, and consumes OUT (the
//! predictions topic, or the passthrough's copy); latency = a record's arrival at this consumer − the event's
//! send by this producer (both in this process, monotonic clock, µs), recorded in an
//! hdrhistogram. The first 20 % of the run is warm-up and not recorded. Prints
//! `{"rate", "events", "measured", "p50_ms", "p99_ms", "p999_ms", "max_ms"}`.
//!
//! `cargo run --release --example latency -- BROKERS RATE SECONDS OUT [KEY=VALUE...]`
//! (topics `events`, `labels` and OUT; the worker or passthrough must be running and caught up).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use streamlr::simulate::{Record, SimConfig, Simulator};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, rate, seconds, out, extra @ ..] = args.as_slice() else {
        anyhow::bail!("usage: latency BROKERS RATE SECONDS OUT [KEY=VALUE...]");
    };
    let rate: f64 = rate.parse()?;
    let seconds: f64 = seconds.parse()?;
    // The given properties go last, so they override these defaults.
    let build = |defaults: &[(&str, &str)]| {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers.as_str());
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for kv in extra {
            if let Some((k, v)) = kv.split_once('=') {
                c.set(k, v);
            }
        }
        c
    };
    // Read predictions from their current end.
    let consumer: BaseConsumer = build(&[
        ("group.id", "streamlr-latency-probe"),
        ("enable.auto.commit", "false"),
        ("fetch.wait.max.ms", "5"),
    ])
    .create()?;
    let md = consumer.fetch_metadata(Some(out.as_str()), Duration::from_secs(10))?;
    let parts = md
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    anyhow::ensure!(parts > 0, "no topic {out}");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(out, p as i32, rdkafka::Offset::End)?;
    }
    consumer.assign(&tpl)?;

    let start_ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let count = (rate * seconds) as u64;
    let warmup = count / 5;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let hist = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new(3)?));
    let reader = {
        let (sent, done, hist) = (sent.clone(), done.clone(), hist.clone());
        std::thread::spawn(move || {
            let mut seen = 0u64;
            let mut idle_since: Option<Instant> = None;
            loop {
                match consumer.poll(Duration::from_millis(20)) {
                    Some(Ok(m)) => {
                        idle_since = None;
                        let at = Instant::now();
                        // Predictions and the passthrough's copies are both keyed by id.
                        let id = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
                        if let Some(t) = sent.lock().ok().and_then(|mut s| s.remove(&id)) {
                            let us = at.duration_since(t).as_micros() as u64;
                            if let Ok(mut h) = hist.lock() {
                                let _ = h.record(us.max(1));
                            }
                            seen += 1;
                        }
                    }
                    Some(Err(_)) => {}
                    None => {
                        if done.load(Ordering::SeqCst) {
                            let t = *idle_since.get_or_insert_with(Instant::now);
                            if t.elapsed() > Duration::from_secs(10) {
                                break;
                            }
                        }
                    }
                }
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_secs(2)); // the assignment at End settles
    // librdkafka's default linger (5 ms), as an event producer would use: linger.ms=0 at
    // 13k events/s sent a request per record and slowed the test broker (tansu) so much that
    // even the passthrough's p50 was 1.4 s (157 ms with the default; same run).
    let producer: BaseProducer = build(&[]).create()?;
    let mut sim = Simulator::new(SimConfig {
        count,
        seed: 77,
        start_ts,
        rate,
        label_delay_min_ms: 1_000,
        label_delay_max_ms: 5_000,
        malformed_rate: 0.0,
        ..SimConfig::default()
    });
    let wall = Instant::now();
    let mut events = 0u64;
    while let Some(r) = sim.next_record() {
        let (ts, topic, line) = match &r {
            Record::Event { ts, line } => (*ts, "events", line),
            Record::Label { ts, line } => (*ts, "labels", line),
        };
        let due = Duration::from_millis((ts - start_ts).max(0) as u64);
        if let Some(wait) = due.checked_sub(wall.elapsed()) {
            std::thread::sleep(wait);
        }
        let v: serde_json::Value = serde_json::from_str(line)?;
        let id = v["id"].as_str().unwrap_or_default().to_string();
        if topic == "events" {
            events += 1;
            if events > warmup
                && let Ok(mut s) = sent.lock()
            {
                s.insert(id.clone(), Instant::now());
            }
        }
        let mut rec = Some(BaseRecord::to(topic).key(&id).payload(line).timestamp(ts));
        while let Some(r) = rec.take() {
            if let Err((_, r)) = producer.send(r) {
                producer.poll(Duration::from_millis(1));
                rec = Some(r);
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30))?;
    let produce_secs = wall.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    let measured = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    let h = hist.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "rate": rate, "events": events, "produce_seconds": produce_secs,
            "measured": measured, "p50_ms": ms(0.5), "p99_ms": ms(0.99),
            "p999_ms": ms(0.999), "max_ms": h.max() as f64 / 1000.0,
        })
    );
    Ok(())
}
