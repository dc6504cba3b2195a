//! A running service's data, as an operator's tools reach it: its queues
//! and buckets ([`ServiceData`]), the backends its roles share, with the
//! names its manifest grants. The admin API sends, peeks, purges and
//! redrives through them, and lists and deletes keys; the host's queue
//! history samples them. None of it changes the service's desired state,
//! so it works for services the fabric runs too.
//!
//! Only what the manifest grants is reachable: a queue or bucket no role of
//! the service is granted (nor the poison queue of one) is 404, so an
//! operator's typo never creates a queue nobody reads. A poison queue has
//! no poison queue of its own, so `NAME-poison-poison` is 404 even when
//! `NAME-poison` is granted: on NATS, reaching it would create a stream
//! nobody reads.

use super::Controller;
use super::error::ControllerError;
use super::lock::lock;
use crate::backends::Backends;
use std::collections::{BTreeMap, BTreeSet};
use weft_broker::{POISON_SUFFIX, poison_queue, scoped};

/// A running service's queues and buckets: its backends and the names its
/// roles are granted.
#[derive(Clone)]
pub struct ServiceData {
    /// The service's name (the scope of its backends' names).
    pub service: String,
    /// Its queues and buckets.
    pub backends: Backends,
    /// The queues any of its roles is granted, as the manifest names them.
    pub queues: BTreeSet<String>,
    /// The buckets any of its roles is granted, with each one's time to
    /// live in seconds (`None`: entries live until deleted).
    pub buckets: BTreeMap<String, Option<u64>>,
}

impl ServiceData {
    /// The backend's name for queue `queue`, if the service may use it: a
    /// granted queue, or the poison queue of one; never the poison queue of
    /// a poison queue.
    pub fn queue(&self, queue: &str) -> Result<String, ControllerError> {
        let poison_of = queue.strip_suffix(POISON_SUFFIX);
        let poison_of_poison = poison_of.is_some_and(|of| of.ends_with(POISON_SUFFIX));
        let granted =
            self.queues.contains(queue) || poison_of.is_some_and(|of| self.queues.contains(of));
        if granted && !poison_of_poison {
            Ok(scoped(&self.service, queue))
        } else {
            Err(ControllerError::NotFound(format!(
                "service '{}' has no queue '{queue}' (no role is granted it)",
                self.service
            )))
        }
    }

    /// The backend's name for bucket `bucket`, if a role is granted it.
    pub fn bucket(&self, bucket: &str) -> Result<String, ControllerError> {
        if self.buckets.contains_key(bucket) {
            Ok(scoped(&self.service, bucket))
        } else {
            Err(ControllerError::NotFound(format!(
                "service '{}' has no bucket '{bucket}' (no role is granted it)",
                self.service
            )))
        }
    }

    /// The granted queues that have a poison queue of their own (a granted
    /// poison queue has none), with the backend's names of both.
    pub fn queue_pairs(&self) -> Vec<(String, String, Option<String>)> {
        self.queues
            .iter()
            .map(|queue| {
                let poison = (!queue.ends_with(POISON_SUFFIX))
                    .then(|| scoped(&self.service, &poison_queue(queue)));
                (queue.clone(), scoped(&self.service, queue), poison)
            })
            .collect()
    }
}

impl Controller {
    /// The queues and buckets of service `name`, running here (404
    /// otherwise: not deployed, still starting, or removed).
    pub fn service_data(&self, name: &str) -> Result<ServiceData, ControllerError> {
        let service = self.service(name)?;
        let state = lock(&service.state);
        let roles = state.manifest.roles.values();
        let queues = roles
            .clone()
            .flat_map(|r| r.queues.iter().cloned())
            .collect();
        // A bucket without a `[buckets.NAME]` table keeps its entries.
        let ttl_seconds = |bucket: &String| {
            let settings = state.manifest.buckets.get(bucket);
            settings.and_then(|s| s.ttl).map(|ttl| ttl.as_secs())
        };
        let buckets = roles
            .flat_map(|r| r.buckets.iter())
            .map(|bucket| (bucket.clone(), ttl_seconds(bucket)))
            .collect();
        Ok(ServiceData {
            service: service.name.clone(),
            backends: service.backends.clone(),
            queues,
            buckets,
        })
    }

    /// [`Controller::service_data`] of every service running here.
    pub fn all_service_data(&self) -> Vec<ServiceData> {
        self.service_names()
            .iter()
            .filter_map(|name| self.service_data(name).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> ServiceData {
        ServiceData {
            service: "shop".into(),
            backends: Backends::memory(),
            queues: ["jobs".to_owned(), "mail-poison".to_owned()].into(),
            buckets: [("results".to_owned(), Some(60))].into(),
        }
    }

    #[test]
    fn only_granted_queues_their_poison_queues_and_granted_buckets_are_reached() {
        let data = data();
        assert_eq!(data.queue("jobs").unwrap(), "shop/jobs");
        assert_eq!(data.queue("jobs-poison").unwrap(), "shop/jobs-poison");
        assert_eq!(data.queue("mail-poison").unwrap(), "shop/mail-poison");
        for refused in ["mail", "other", "jobs-poison-poison", "poison", "-poison"] {
            assert!(
                matches!(data.queue(refused), Err(ControllerError::NotFound(_))),
                "{refused}"
            );
        }
        assert_eq!(data.bucket("results").unwrap(), "shop/results");
        assert!(matches!(
            data.bucket("jobs"),
            Err(ControllerError::NotFound(_))
        ));
        assert_eq!(
            data.queue_pairs(),
            vec![
                (
                    "jobs".to_owned(),
                    "shop/jobs".to_owned(),
                    Some("shop/jobs-poison".to_owned())
                ),
                (
                    "mail-poison".to_owned(),
                    "shop/mail-poison".to_owned(),
                    None
                ),
            ]
        );
    }

    #[test]
    fn a_poison_queue_of_a_poison_queue_is_never_reached() {
        // `mail-poison` is granted, so its own name is reached, but not a
        // poison queue of it, at any depth...
        let mut data = data();
        for refused in ["mail-poison-poison", "mail-poison-poison-poison"] {
            let e = data.queue(refused).unwrap_err();
            assert!(
                matches!(&e, ControllerError::NotFound(why) if why.contains(refused)),
                "{refused}: {e}"
            );
        }
        // ...not even when a manifest grants one by name...
        data.queues.insert("odd-poison-poison".into());
        assert!(matches!(
            data.queue("odd-poison-poison"),
            Err(ControllerError::NotFound(_))
        ));
        // ...while its neighbours keep working.
        assert_eq!(data.queue("mail-poison").unwrap(), "shop/mail-poison");
        assert_eq!(data.queue("jobs-poison").unwrap(), "shop/jobs-poison");
    }
}
