//! Kafka at the edge: client construction from configuration and a producer send that waits
//! when librdkafka's queue is full (backpressure), never drops.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, ProducerContext};
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

/// Sends one record, waiting (polling delivery reports) while the local queue is full.
pub fn send_blocking<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    timestamp_ms: Option<i64>,
) -> Result<(), KafkaError> {
    send_waiting(producer, topic, key, payload, timestamp_ms, || false)
}

/// [`send_blocking`] that stops waiting for room in a full queue once `give_up()` says so
/// (returning the `QueueFull` error): a worker asked to stop must not wait forever for a
/// broker that does not come back.
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
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
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
