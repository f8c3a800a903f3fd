//! Kafka at the edge: client construction from configuration and a producer send that waits
//! when librdkafka's queue is full (backpressure), never drops.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
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
pub fn send_blocking(
    producer: &BaseProducer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    timestamp_ms: Option<i64>,
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
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Flushes everything queued, or fails after `timeout`.
pub fn flush(producer: &BaseProducer, timeout: Duration) -> Result<(), KafkaError> {
    producer.flush(timeout)
}
