//! Kafka at the edge: client construction from configuration and a producer send that waits
//! when librdkafka's queue is full (backpressure), never drops.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

/// A client configuration: `bootstrap.servers` plus librdkafka properties passed through as
/// given (TLS, SASL, timeouts).
pub fn client_config<'a>(
    brokers: &str,
    props: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in props {
        c.set(k, v);
    }
    c
}

/// librdkafka statistics interval (ms) of the consumers unless `statistics.interval.ms` is
/// configured: the consumer-lag gauge reads the high watermarks from these statistics.
pub const STATS_INTERVAL_MS: &str = "5000";

/// Which client of the worker a property set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The events (group) and labels consumers.
    Consumer,
    /// The producer of predictions, dead letters and drift reports.
    Producer,
}

/// The properties the worker gives a client when the configuration does not: what its
/// guarantees and telemetry rely on, and a prefetch sized to the merge's own buffering.
fn worker_defaults(role: Role) -> &'static [(&'static str, &'static str)] {
    match role {
        // Every assigned partition has a queue of its own (the worker splits it off), so
        // librdkafka's prefetch bounds apply per partition: its defaults (64 MiB, 100 000
        // records) would only add to the merge's `kafka.buffer_records` per partition. Both
        // bounds are set: the byte bound counts payloads only, while each queued record also
        // takes a 1 KiB operation of librdkafka's, which is most of what a small record (a
        // label) costs. A partition whose queue is at a bound is fetched again after
        // `fetch.queue.backoff.ms`: librdkafka's 1 s would leave the merge waiting for a
        // partition it has just drained.
        Role::Consumer => &[
            ("auto.offset.reset", "earliest"),
            ("statistics.interval.ms", STATS_INTERVAL_MS),
            ("queued.max.messages.kbytes", "4096"),
            ("queued.min.messages", "5000"),
            ("fetch.queue.backoff.ms", "20"),
        ],
        // Retry until delivered: a broker outage delays, never drops.
        Role::Producer => &[("message.timeout.ms", "0")],
    }
}

/// The librdkafka properties of one of the worker's clients: `[kafka.client]` for both, then
/// `[kafka.consumer]` or `[kafka.producer]` (which win), then the worker's defaults for what
/// neither set. A consumer-only property set in `[kafka.consumer]` never reaches the producer
/// (librdkafka warns about properties a client does not use).
pub fn client_props(k: &crate::config::KafkaConfig, role: Role) -> BTreeMap<String, String> {
    let mut props = k.client.clone();
    let own = match role {
        Role::Consumer => &k.consumer,
        Role::Producer => &k.producer,
    };
    props.extend(own.iter().map(|(key, v)| (key.clone(), v.clone())));
    for (key, v) in worker_defaults(role) {
        props
            .entry((*key).to_string())
            .or_insert_with(|| (*v).to_string());
    }
    props
}

/// Sends one record, waiting (polling delivery reports) while the local queue is full, and
/// serves the delivery reports that are ready.
pub fn send_blocking<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    timestamp_ms: Option<i64>,
) -> Result<(), KafkaError> {
    send_waiting(producer, topic, key, payload, timestamp_ms, || false)?;
    producer.poll(Duration::ZERO);
    Ok(())
}

/// Sends one record, waiting (polling delivery reports) while the local queue is full, until
/// `give_up()` says so (returning the `QueueFull` error): a worker asked to stop must not wait
/// forever for a broker that does not come back. Reports are not served after a send that
/// found room: the caller polls the producer once per batch of sends (a poll per record was
/// ~2 % of the worker's loop).
pub fn send_waiting<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    timestamp_ms: Option<i64>,
    give_up: impl Fn() -> bool,
) -> Result<(), KafkaError> {
    loop {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(ts) = timestamp_ms {
            record = record.timestamp(ts);
        }
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                if give_up() {
                    return Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull));
                }
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// How long [`flush`] sleeps between two looks at the producer's queue.
const FLUSH_STEP: Duration = Duration::from_millis(1);

/// Waits up to `timeout` until the broker has acknowledged (or failed) every record `producer`
/// holds, serving delivery reports meanwhile; `Err(Flush(OperationTimedOut))` if records remain.
/// `Ok` means every delivery callback has run (librdkafka counts a record until its report is
/// served).
///
/// Not rdkafka's `Producer::flush`: it polls in steps of 100 ms, and `BaseProducer::poll`
/// returns at its deadline, not at the first event, so a flush that was not done at once took
/// 100 ms however soon the acknowledgements came (every second checkpoint of the worker's
/// benchmark stopped the loop that long). Nor `poll` with a short timeout: it rounds the time
/// left down to whole milliseconds and so spins. This serves what is ready, then sleeps 1 ms.
pub fn flush<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let deadline = Instant::now().checked_add(timeout);
    // Once, as rdkafka's flush does: wakes the broker threads to send what lingers.
    let _ = Producer::flush(producer, Duration::ZERO);
    loop {
        // Each poll serves at most one event; serve until none is ready.
        let mut left = producer.in_flight_count();
        loop {
            if left == 0 {
                return Ok(());
            }
            producer.poll(Duration::ZERO);
            let now = producer.in_flight_count();
            if now == left {
                break;
            }
            left = now;
        }
        let now = Instant::now();
        let step = match deadline {
            Some(d) if now >= d => {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
            }
            Some(d) => FLUSH_STEP.min(d - now),
            None => FLUSH_STEP,
        };
        std::thread::sleep(step);
    }
}

/// Why the input topics cannot be joined partition by partition.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// Metadata could not be fetched.
    #[error("cannot read metadata of topic {topic:?}: {source}")]
    Metadata {
        /// The topic.
        topic: String,
        /// Cause.
        source: KafkaError,
    },
    /// The topic does not exist (or has no partitions).
    #[error(
        "topic {topic:?} does not exist: create it (input topics: with the same partition count as each other)"
    )]
    Missing {
        /// The topic.
        topic: String,
    },
    /// Different partition counts: an id's label would not be in its event's partition.
    #[error(
        "topics {events:?} ({events_partitions} partitions) and {labels:?} ({labels_partitions} partitions) are \
         not co-partitioned: give both the same partition count and key every record by id, so an id's label \
         lands in the partition of its event"
    )]
    NotCoPartitioned {
        /// Events topic.
        events: String,
        /// Its partitions.
        events_partitions: usize,
        /// Labels topic.
        labels: String,
        /// Its partitions.
        labels_partitions: usize,
    },
}

/// The partition count of `topic`, which must exist.
pub fn partition_count<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<usize, TopicError> {
    let md = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| TopicError::Metadata {
            topic: topic.to_string(),
            source,
        })?;
    match md.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len()),
        _ => Err(TopicError::Missing {
            topic: topic.to_string(),
        }),
    }
}

/// Checks that the events and labels topics exist with the same partition count; returns it.
pub fn check_co_partitioned<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    events: &str,
    labels: &str,
    timeout: Duration,
) -> Result<usize, TopicError> {
    let e = partition_count(client, events, timeout)?;
    let l = partition_count(client, labels, timeout)?;
    if e == l {
        Ok(e)
    } else {
        Err(TopicError::NotCoPartitioned {
            events: events.to_string(),
            events_partitions: e,
            labels: labels.to_string(),
            labels_partitions: l,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KafkaConfig;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn each_client_gets_the_shared_properties_its_own_and_the_worker_defaults() {
        let k = KafkaConfig {
            client: map(&[("security.protocol", "SASL_SSL"), ("linger.ms", "1")]),
            consumer: map(&[("fetch.wait.max.ms", "10"), ("auto.offset.reset", "latest")]),
            producer: map(&[("linger.ms", "20")]),
            ..KafkaConfig::default()
        };
        let c = client_props(&k, Role::Consumer);
        let p = client_props(&k, Role::Producer);
        // Shared properties reach both.
        assert_eq!(c["security.protocol"], "SASL_SSL");
        assert_eq!(p["security.protocol"], "SASL_SSL");
        // Consumer-only properties stay with the consumers, producer-only with the producer.
        assert_eq!(c["fetch.wait.max.ms"], "10");
        assert!(!p.contains_key("fetch.wait.max.ms"));
        assert!(!p.contains_key("auto.offset.reset"));
        assert!(!p.contains_key("queued.max.messages.kbytes"));
        assert!(!c.contains_key("message.timeout.ms"));
        // A role's own table wins over the shared one.
        assert_eq!(p["linger.ms"], "20");
        assert_eq!(c["linger.ms"], "1");
        // Worker defaults fill only what neither table set.
        assert_eq!(c["auto.offset.reset"], "latest");
        assert_eq!(c["queued.max.messages.kbytes"], "4096");
        assert_eq!(c["queued.min.messages"], "5000");
        assert_eq!(c["fetch.queue.backoff.ms"], "20");
        assert!(!p.contains_key("queued.min.messages"));
        assert!(!p.contains_key("fetch.queue.backoff.ms"));
        assert_eq!(c["statistics.interval.ms"], "5000");
        assert_eq!(p["message.timeout.ms"], "0");
        let k = KafkaConfig {
            client: map(&[
                ("message.timeout.ms", "30000"),
                ("auto.offset.reset", "latest"),
            ]),
            ..KafkaConfig::default()
        };
        assert_eq!(
            client_props(&k, Role::Producer)["message.timeout.ms"],
            "30000"
        );
        assert_eq!(
            client_props(&k, Role::Consumer)["auto.offset.reset"],
            "latest"
        );
    }
}
