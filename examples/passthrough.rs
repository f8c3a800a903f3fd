//! The passthrough baseline of `scripts/bench_worker.sh`: a consumer-group member that copies
//! every record of the events topic to an output topic, decoding nothing, with the worker's
//! group-session, EOF and manual-commit settings and its producer delivery setting. Its prefetch
//! stays librdkafka's: the worker's bounds (`queued.min.messages = 5000` per partition, see
//! `streamlr::kafka`) made this loop ~18 % slower (213-219k against 249-266k records/s, 500k
//! records on 3 partitions, 2026-12-08), and the baseline is the faster of the two. Exits once
//! it has copied `--count` records and the broker acknowledged them; prints `{"records",
//! "seconds", "records_per_s"}` timed from its start, like the worker's figure (group join
//! included).
//!
//! `cargo run --release --example passthrough -- BROKERS FROM TO COUNT [KEY=VALUE...]` (the
//! KEY=VALUE librdkafka properties override the defaults above, for both clients).

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::BaseProducer;

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, from, to, count, extra @ ..] = args.as_slice() else {
        anyhow::bail!("usage: passthrough BROKERS FROM TO COUNT [KEY=VALUE...]");
    };
    let count: u64 = count.parse()?;
    let mut props = Vec::new();
    for kv in extra {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{kv}: expected KEY=VALUE"))?;
        props.push((k.to_string(), v.to_string()));
    }
    // The given properties go last, so they can override these defaults (the benchmark's live
    // latency run reads from the end with `auto.offset.reset=latest` and its own group.id).
    let build = |defaults: &[(&str, &str)]| {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers.as_str());
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &props {
            c.set(k, v);
        }
        c
    };
    let consumer: BaseConsumer = build(&[
        ("group.id", "streamlr-passthrough"),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "true"),
        ("partition.assignment.strategy", "range"),
        ("auto.offset.reset", "earliest"),
    ])
    .create()?;
    let producer: BaseProducer = build(&[("message.timeout.ms", "0")]).create()?;
    consumer.subscribe(&[from.as_str()])?;
    let mut copied = 0u64;
    while copied < count {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = match m {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(_)) => continue,
            Err(e) => {
                eprintln!("consumer: {e}");
                continue;
            }
        };
        let mut record =
            rdkafka::producer::BaseRecord::to(to.as_str()).payload(m.payload().unwrap_or_default());
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        let mut record = Some(record);
        while let Some(r) = record.take() {
            match producer.send(r) {
                Ok(()) => producer.poll(Duration::ZERO),
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    producer.poll(Duration::from_millis(5));
                    record = Some(r);
                }
                Err((e, _)) => anyhow::bail!("producing: {e}"),
            }
        }
        copied += 1;
    }
    // The worker's flush (serves acknowledgements every millisecond, see its doc).
    streamlr::kafka::flush(&producer, Duration::from_secs(60))?;
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"records": copied, "seconds": seconds, "records_per_s": copied as f64 / seconds})
    );
    Ok(())
}
