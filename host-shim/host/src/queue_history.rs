//! The recent history of every running service's queue lengths, for the
//! admin API's `GET /v1/services/{service}/queues` and the dashboard's
//! charts: a task per host ([`spawn_sampler`]) reads each granted queue's
//! length and its poison queue's every [`SAMPLE_EVERY`], and
//! [`QueueHistory`] keeps the last [`KEPT_SAMPLES`] of each (ten minutes).
//!
//! Memory is bounded: a fixed number of samples per queue, queues only as
//! many as the manifests grant, and a service's history is forgotten once
//! it no longer runs (removed), as is a queue's once no role is granted it.
//! The clock is an argument ([`sample`] takes the time), so tests drive it
//! without sleeping. The admin API reads the lengths now with the same
//! [`lengths`].

use crate::clock::now_ms;
use crate::controller::data::ServiceData;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;
use weft_broker::QueueBroker;

/// How often the lengths are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept per queue: ten minutes' worth.
pub const KEPT_SAMPLES: usize = 120;
/// How long one length may take to read: a backend that does not answer
/// (a NATS server down) costs each round at most this per queue.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// One queue's lengths at one time; a length the backend did not give
/// (in time) is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Messages the queue held (visible, delayed or leased).
    pub length: Option<u64>,
    /// Messages its poison queue held (`None` for a poison queue itself).
    pub poison_length: Option<u64>,
}

/// The last [`KEPT_SAMPLES`] samples of each running service's queues.
#[derive(Debug, Default)]
pub struct QueueHistory {
    /// Service → queue → samples, oldest first.
    services: Mutex<BTreeMap<String, BTreeMap<String, VecDeque<Sample>>>>,
}

impl QueueHistory {
    /// Adds one round of `service`'s samples, a sample per granted queue;
    /// a queue not in the round (no longer granted) is forgotten.
    pub fn record(&self, service: &str, round: Vec<(String, Sample)>) {
        let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        let queues = services.entry(service.to_owned()).or_default();
        let granted: BTreeSet<&String> = round.iter().map(|(queue, _)| queue).collect();
        queues.retain(|queue, _| granted.contains(queue));
        for (queue, sample) in round {
            let samples = queues.entry(queue).or_default();
            if samples.len() >= KEPT_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(sample);
        }
    }

    /// Forgets every service not in `running`.
    pub fn keep_only(&self, running: &BTreeSet<String>) {
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|service, _| running.contains(service));
    }

    /// `service`'s samples of `queue`, oldest first (none yet: empty).
    pub fn of(&self, service: &str, queue: &str) -> Vec<Sample> {
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(service)
            .and_then(|queues| queues.get(queue))
            .map(|samples| samples.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// Queue `scoped`'s length, if the backend gives it within a second.
async fn length(queues: &dyn QueueBroker, scoped: &str) -> Option<u64> {
    tokio::time::timeout(READ_TIMEOUT, queues.len(scoped))
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|n| u64::try_from(n).ok())
}

/// One granted queue's lengths now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lengths {
    /// The queue, as the manifest names it.
    pub name: String,
    /// Messages it holds, if the backend answered within a second.
    pub length: Option<u64>,
    /// Messages its poison queue holds (`None` for a poison queue, or when
    /// the backend did not answer within a second).
    pub poison_length: Option<u64>,
}

/// The lengths of each queue of `data` and of its poison queue, in the
/// order of their names; each read bounded at a second, so a backend that
/// does not answer costs at most two seconds a queue.
pub async fn lengths(data: &ServiceData) -> Vec<Lengths> {
    let queues = data.backends.queues.as_ref();
    let mut found = Vec::new();
    for (name, scoped, poison) in data.queue_pairs() {
        let poison_length = match &poison {
            Some(poison) => length(queues, poison).await,
            None => None,
        };
        found.push(Lengths {
            name,
            length: length(queues, &scoped).await,
            poison_length,
        });
    }
    found
}

/// Samples every queue of `running` (the services running now) at time
/// `at_ms`, and forgets the services that no longer run.
pub async fn sample(history: &QueueHistory, running: &[ServiceData], at_ms: u64) {
    for data in running {
        let round = lengths(data)
            .await
            .into_iter()
            .map(|found| {
                let sample = Sample {
                    at_ms,
                    length: found.length,
                    poison_length: found.poison_length,
                };
                (found.name, sample)
            })
            .collect();
        history.record(&data.service, round);
    }
    history.keep_only(&running.iter().map(|s| s.service.clone()).collect());
}

/// Samples the services `running` gives (a controller's
/// [`all_service_data`](crate::controller::Controller::all_service_data))
/// into `history` every [`SAMPLE_EVERY`] until `stop` completes; the task
/// then ends and drops `running` (and the controller it holds). A round
/// that runs late (a slow backend) delays the next rather than bunching
/// them.
pub fn spawn_sampler(
    history: Arc<QueueHistory>,
    running: impl Fn() -> Vec<ServiceData> + Send + Sync + 'static,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let rounds = async {
            loop {
                every.tick().await;
                sample(&history, &running(), now_ms()).await;
            }
        };
        tokio::select! {
            () = rounds => {}
            () = stop => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::Backends;
    use weft_broker::SendOptions;

    fn at(at_ms: u64, length: u64) -> Sample {
        Sample {
            at_ms,
            length: Some(length),
            poison_length: Some(0),
        }
    }

    #[test]
    fn each_queue_keeps_its_last_samples_in_order_and_no_more() {
        let history = QueueHistory::default();
        let rounds = u64::try_from(KEPT_SAMPLES).unwrap() + 30;
        for i in 0..rounds {
            history.record(
                "shop",
                vec![
                    ("jobs".into(), at(i * 5000, i)),
                    ("mail".into(), at(i * 5000, 2 * i)),
                ],
            );
        }
        let jobs = history.of("shop", "jobs");
        assert_eq!(jobs.len(), KEPT_SAMPLES);
        assert_eq!(jobs[0], at(30 * 5000, 30), "the oldest kept");
        assert_eq!(jobs[KEPT_SAMPLES - 1], at((rounds - 1) * 5000, rounds - 1));
        assert!(jobs.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
        // The neighbour queue kept its own, just as many.
        let mail = history.of("shop", "mail");
        assert_eq!(mail.len(), KEPT_SAMPLES);
        assert_eq!(mail[0].length, Some(60));
        assert!(history.of("shop", "other").is_empty());
        assert!(history.of("blog", "jobs").is_empty());
    }

    #[test]
    fn removed_services_and_queues_no_longer_granted_are_forgotten() {
        let history = QueueHistory::default();
        history.record(
            "shop",
            vec![("jobs".into(), at(0, 1)), ("mail".into(), at(0, 2))],
        );
        history.record("blog", vec![("posts".into(), at(0, 3))]);
        // An upgrade took `mail` away from every role.
        history.record("shop", vec![("jobs".into(), at(5000, 4))]);
        assert!(history.of("shop", "mail").is_empty());
        assert_eq!(history.of("shop", "jobs").len(), 2);
        history.keep_only(&["shop".to_owned()].into());
        assert!(history.of("blog", "posts").is_empty());
        assert_eq!(history.of("shop", "jobs").len(), 2);
    }

    fn data(service: &str, backends: &Backends) -> ServiceData {
        ServiceData {
            service: service.into(),
            backends: backends.clone(),
            queues: ["jobs".to_owned(), "tasks-poison".to_owned()].into(),
            buckets: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn a_round_reads_each_queue_and_its_poison_queue_at_the_time_given() {
        let backends = Backends::memory();
        let queues = backends.queues.clone();
        for body in ["a", "b", "c"] {
            queues
                .send("shop/jobs", body.into(), SendOptions::now())
                .await
                .unwrap();
        }
        queues
            .send("shop/jobs-poison", b"x".to_vec(), SendOptions::now())
            .await
            .unwrap();
        // Another service's queue of the same name is not counted.
        queues
            .send("blog/jobs", b"y".to_vec(), SendOptions::now())
            .await
            .unwrap();
        let history = QueueHistory::default();
        sample(&history, &[data("shop", &backends)], 1_000).await;
        queues.purge("shop/jobs").await.unwrap();
        sample(&history, &[data("shop", &backends)], 6_000).await;
        assert_eq!(
            history.of("shop", "jobs"),
            vec![
                Sample {
                    at_ms: 1_000,
                    length: Some(3),
                    poison_length: Some(1)
                },
                Sample {
                    at_ms: 6_000,
                    length: Some(0),
                    poison_length: Some(1)
                },
            ]
        );
        // A granted poison queue has no poison queue of its own.
        assert_eq!(
            history.of("shop", "tasks-poison")[0],
            Sample {
                at_ms: 1_000,
                length: Some(0),
                poison_length: None
            }
        );
        // The service stopped running: its history goes with it.
        sample(&history, &[], 11_000).await;
        assert!(history.of("shop", "jobs").is_empty());
    }

    /// As a dropped [`crate::launch::AdminServer`] does: its stop watch's
    /// sender goes, and the sampler ends, letting go of what it held.
    #[tokio::test]
    async fn the_sampler_ends_and_lets_go_of_the_controller_when_its_stop_sender_goes() {
        let backends = Backends::memory();
        let history = Arc::new(QueueHistory::default());
        let held = Arc::new(());
        let in_task = held.clone();
        let running = move || {
            let _controller = &in_task;
            vec![data("shop", &backends)]
        };
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = spawn_sampler(history.clone(), running, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        });
        // The first round is taken at once.
        let first_round = async {
            while history.of("shop", "jobs").is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), first_round)
            .await
            .unwrap();
        assert_eq!(Arc::strong_count(&held), 2, "the task holds it");
        drop(stop);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(Arc::strong_count(&held), 1, "the task let go of it");
    }
}
