//! Who makes a VMBus call: the role's [`Grants`], checked by every call,
//! and its [`RoleLimiter`], which every call passes; and the instance's
//! tracing, under whose current span each queue call is recorded.

use crate::grants::Grants;
use crate::rate_limit::RoleLimiter;
use crate::trace::InstanceTrace;
use std::sync::Arc;

/// The role an instance runs for, as every interface sees it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub(crate) grants: Arc<Grants>,
    pub(crate) limiter: Arc<RoleLimiter>,
    /// The instance's tracing (off unless the host installed a sink).
    pub(crate) trace: InstanceTrace,
}

impl Caller {
    /// The caller for a role with `grants`, rate limited by its `limiter`.
    pub fn new(grants: Arc<Grants>, limiter: Arc<RoleLimiter>) -> Self {
        Self {
            grants,
            limiter,
            trace: InstanceTrace::default(),
        }
    }

    /// The backend's name for a guest's queue or bucket: scoped by service,
    /// so two services on one host never share one by accident.
    pub(crate) fn scoped(&self, name: &str) -> String {
        weft_broker::scoped(&self.grants.service, name)
    }
}
