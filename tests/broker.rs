//! The test broker works the way the worker will use it: the project's script starts it on a
//! free loopback port, topics get partitions, rdkafka produces keyed records and a consumer group
//! reads every one of them back, with partition-EOF events at the end of each partition.
//! librdkafka's MockCluster (for injected faults) is checked to be available too.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

/// A group consumer of `topic` from the earliest offset, with partition-EOF events.
fn group_consumer(bootstrap: &str, group: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // Test profile only: tansu joins a group in ~1 s with these (real Kafka needs >= 6000).
        .set("session.timeout.ms", "2000")
        .set("heartbeat.interval.ms", "300")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

fn consume_all(
    bootstrap: &str,
    topic: &str,
    partitions: usize,
    expect: usize,
) -> (HashSet<String>, usize) {
    let consumer = group_consumer(bootstrap, "smoke", topic);
    let mut keys = HashSet::new();
    let mut eofs = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && (keys.len() < expect || eofs.len() < partitions) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
                keys.insert(key);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eofs.insert(p);
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    (keys, eofs.len())
}

#[test]
fn rdkafka_round_trip_through_the_project_broker() {
    let broker = common::Broker::start();
    broker.topic("smoke", 3);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let n = 3000;
    for i in 0..n {
        let key = format!("tx-{i}");
        let payload = format!(r#"{{"id":"{key}","features":{{"x":{i}}}}}"#);
        loop {
            match producer.send(BaseRecord::to("smoke").key(&key).payload(&payload)) {
                Ok(()) => break,
                // A full queue means wait, never drop.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let (keys, eofs) = consume_all(&broker.bootstrap, "smoke", 3, n);
    assert_eq!(
        keys.len(),
        n,
        "every produced record is consumed once by the group"
    );
    assert_eq!(eofs, 3, "an EOF event for each of the 3 partitions");
}

#[test]
fn mock_cluster_is_available_for_fault_injection() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("t", 2, 1).expect("topic");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .expect("producer");
    producer
        .send(BaseRecord::to("t").key("k").payload("v"))
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(Duration::from_secs(10)).expect("flush");
}

/// `streamlr simulate --brokers` writes events and labels keyed by id and timestamped with their
/// own times, so the two topics are co-partitioned: an id's label sits in the partition of its
/// event.
#[test]
fn simulate_produces_co_partitioned_keyed_topics() {
    use std::collections::HashMap;
    let broker = common::Broker::start();
    broker.topic("ev", 3);
    broker.topic("lb", 3);
    let out = common::run(
        &[
            "simulate",
            "--brokers",
            &broker.bootstrap,
            "--events-topic",
            "ev",
            "--labels-topic",
            "lb",
            "--count",
            "3000",
            "--seed",
            "4",
            "--start-ts",
            "1767225600000",
            "--malformed-rate",
            "0.01",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stderr).trim())
            .expect("summary on stderr");
    let events = summary["events"].as_u64().expect("events")
        + summary["malformed"].as_u64().expect("malformed");
    let labels = summary["labels"].as_u64().expect("labels");

    let read = |topic: &str, expect: u64| -> HashMap<String, (i32, i64, serde_json::Value)> {
        let consumer = group_consumer(&broker.bootstrap, &format!("check-{topic}"), topic);
        let (mut got, mut n, mut eofs) = (HashMap::new(), 0u64, HashSet::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && (n < expect || eofs.len() < 3) {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    n += 1;
                    let v: serde_json::Value =
                        serde_json::from_slice(m.payload().unwrap_or_default())
                            .unwrap_or(serde_json::Value::Null);
                    let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
                    let ts = m.timestamp().to_millis().unwrap_or(-1);
                    got.insert(key, (m.partition(), ts, v));
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    eofs.insert(p);
                }
                Some(Err(e)) => panic!("{e}"),
                None => {}
            }
        }
        assert_eq!(n, expect, "{topic}: every record arrives");
        got
    };
    let ev = read("ev", events);
    let lb = read("lb", labels);
    let mut checked = 0;
    for (id, (partition, ts, label)) in &lb {
        assert_eq!(
            label["id"].as_str(),
            Some(id.as_str()),
            "labels are keyed by id"
        );
        assert_eq!(
            label["ts"].as_i64(),
            Some(*ts),
            "the Kafka timestamp is the label time"
        );
        let (event_partition, event_ts, event) = &ev[id];
        assert_eq!(
            event_partition, partition,
            "{id}: label and event in the same partition"
        );
        assert_eq!(
            event["ts"].as_i64(),
            Some(*event_ts),
            "the Kafka timestamp is the event time"
        );
        checked += 1;
    }
    assert_eq!(checked, labels);
}

/// Co-partitioning is checked against the broker's metadata: same count passes, a mismatch or a
/// missing topic is refused with an error that says what to fix.
#[test]
fn co_partitioning_is_checked() {
    use rdkafka::producer::BaseProducer as P;
    use streamlr::kafka::{TopicError, check_co_partitioned};
    let broker = common::Broker::start();
    broker.topic("events3", 3);
    broker.topic("labels3", 3);
    broker.topic("labels2", 2);
    let p: P = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .expect("client");
    let t = Duration::from_secs(10);
    assert_eq!(
        check_co_partitioned(p.client(), "events3", "labels3", t).expect("same count"),
        3
    );
    let e = check_co_partitioned(p.client(), "events3", "labels2", t).expect_err("mismatch");
    assert!(matches!(
        e,
        TopicError::NotCoPartitioned {
            events_partitions: 3,
            labels_partitions: 2,
            ..
        }
    ));
    let msg = e.to_string();
    assert!(
        msg.contains("same partition count") && msg.contains("key every record by id"),
        "{msg}"
    );
    let e = check_co_partitioned(p.client(), "events3", "nope", t).expect_err("missing");
    assert!(e.to_string().contains("\"nope\""), "{e}");
}

/// Counts the delivery reports a producer served.
#[derive(Default)]
struct Acks(std::sync::atomic::AtomicUsize);

impl rdkafka::ClientContext for Acks {}

impl rdkafka::producer::ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        assert!(r.is_ok(), "delivery failed: {r:?}");
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The worker's `kafka::flush` (which a cut waits on before its checkpoint) times out while
/// records are unacknowledged, and returns Ok only once every record's acknowledgement has been
/// served: against librdkafka's mock broker with a 300 ms round trip.
#[test]
fn flush_returns_once_every_record_is_acknowledged() {
    use std::sync::atomic::Ordering;
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("t", 2, 1).expect("topic");
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("linger.ms", "1")
        .create_with_context(Acks::default())
        .expect("producer");
    // Connected first, so the round trip below delays the produce requests.
    producer
        .send(BaseRecord::to("t").key("k").payload("v"))
        .map_err(|(e, _)| e)
        .expect("send");
    streamlr::kafka::flush(&producer, Duration::from_secs(10)).expect("first flush");
    assert_eq!(producer.context().0.load(Ordering::SeqCst), 1);
    cluster
        .broker_round_trip_time(1, Duration::from_millis(300))
        .expect("rtt");
    let n = 500;
    for i in 0..n {
        let key = format!("k{i}");
        producer
            .send(BaseRecord::to("t").key(&key).payload("v"))
            .map_err(|(e, _)| e)
            .expect("send");
    }
    let early = streamlr::kafka::flush(&producer, Duration::from_millis(20));
    assert!(
        matches!(
            early,
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
        ),
        "{early:?}"
    );
    assert!(producer.in_flight_count() > 0);
    // Waiting is sleeping, not spinning: the thread is on the CPU for a small part of the wait
    // (a spinning flush is on it nearly all the time).
    let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
    streamlr::kafka::flush(&producer, Duration::from_secs(10)).expect("flush");
    let (cpu, wall) = (thread_cpu_ns() - cpu0, wall0.elapsed().as_nanos() as u64);
    assert!(cpu < wall / 3, "on the CPU {cpu} ns of {wall} ns");
    assert_eq!(producer.context().0.load(Ordering::SeqCst), n + 1);
    assert_eq!(producer.in_flight_count(), 0);
}

/// Time the calling thread has spent on a CPU (`/proc/thread-self/schedstat`, nanoseconds).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("schedstat")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("on-CPU time")
}
