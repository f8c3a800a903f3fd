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

fn consume_all(
    bootstrap: &str,
    topic: &str,
    partitions: usize,
    expect: usize,
) -> (HashSet<String>, usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "smoke")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // Test profile only: tansu joins a group in ~1 s with these (real Kafka needs >= 6000).
        .set("session.timeout.ms", "2000")
        .set("heartbeat.interval.ms", "300")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
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
