//! Placement: which host runs which instance of every role, decided by the
//! leader from the hosts it sees, what the services ask for and where their
//! instances run now. Pure: no I/O, no clock, the same answer for the same
//! input, so a reconcile with nothing to do moves nothing.
//!
//! Two passes. The first keeps every instance that may stay where it is
//! (its index is still wanted, its host is ready or only suspect, the
//! host's labels still satisfy the role, the host still has room), so a
//! healthy fabric never reshuffles. The second places what is missing, one
//! index at a time, on the ready host that spreads the role best: fewest of
//! its instances in the host's fault domain, then on the host, then the
//! least loaded host, then the smallest id (for determinism).

use crate::FabricError;
use crate::model::{HostState, RolePlacement};
use std::collections::{BTreeMap, HashMap};
use weft_host::manifest::{Manifest, RoleKind};

/// A member as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    /// Its id.
    pub id: String,
    /// Hosts that can fail together share a fault domain.
    pub fault_domain: String,
    /// Its labels, which a role's `requires` must match.
    pub labels: BTreeMap<String, String>,
    /// Sandbox slots it offers.
    pub capacity: u32,
    /// Whether it may receive (Ready), keep (Ready, Suspect) or must shed
    /// (Down, Draining) instances.
    pub state: HostState,
}

/// What one role of one service asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// The service.
    pub service: String,
    /// The role.
    pub role: String,
    /// Instances wanted (a web role: hosts serving it).
    pub count: u32,
    /// Slots each instance reserves on its host (an instance holds at
    /// least one whatever this says: a sandbox is never free).
    pub slots_each: u32,
    /// At most one instance per host (a web role).
    pub one_per_host: bool,
    /// Labels a host must carry, every key with this value.
    pub requires: BTreeMap<String, String>,
}

/// A role of a service: (service, role).
pub type RoleKey = (String, String);

/// Where every role's instances run now.
pub type Current = BTreeMap<RoleKey, RolePlacement>;

/// What [`place`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Every demanded role's placement (empty when none could be placed or
    /// none is wanted).
    pub placements: BTreeMap<RoleKey, RolePlacement>,
    /// Instances no host can take now, by role; roles with none are absent.
    pub unplaced: BTreeMap<RoleKey, u32>,
}

impl Demand {
    /// What each role of `manifest` (service `service`'s, resolved) asks
    /// of the fabric: a web role one instance on each of its
    /// `fabric_instances` distinct hosts, each holding the role's slots; a
    /// worker role that many single-slot instances anywhere; either only on
    /// hosts carrying the role's `placement` labels.
    pub fn of_manifest(service: &str, manifest: &Manifest) -> Vec<Demand> {
        manifest
            .roles
            .iter()
            .map(|(name, role)| {
                let web = role.kind() == RoleKind::Web;
                Demand {
                    service: service.to_owned(),
                    role: name.clone(),
                    count: role.fabric_instances(),
                    slots_each: if web { role.slots() } else { 1 },
                    one_per_host: web,
                    requires: role.placement.clone(),
                }
            })
            .collect()
    }

    /// Its key in [`Current`] and [`Plan`].
    pub fn key(&self) -> RoleKey {
        (self.service.clone(), self.role.clone())
    }

    /// Slots one instance holds.
    fn cost(&self) -> u64 {
        u64::from(self.slots_each.max(1))
    }

    /// The host's labels carry every label the role requires.
    fn admits(&self, host: &HostView) -> bool {
        self.requires
            .iter()
            .all(|(key, value)| host.labels.get(key) == Some(value))
    }

    /// How a refusal names the hosts it may use.
    fn where_it_may_run(&self) -> Option<String> {
        if self.requires.is_empty() {
            return None;
        }
        let labels: Vec<String> = self
            .requires
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        Some(labels.join(", "))
    }
}

/// The hosts, with the slots placed on each so far.
struct Fabric<'a> {
    /// Each id once (the first view of a repeated id wins).
    hosts: Vec<&'a HostView>,
    by_id: HashMap<&'a str, usize>,
    /// Each host's fault domain, numbered.
    domain_of: Vec<usize>,
    domains: usize,
    used: Vec<u64>,
}

impl<'a> Fabric<'a> {
    /// The hosts, with `held` (slots by host id) already used.
    fn holding(views: &'a [HostView], held: &BTreeMap<String, u64>) -> Self {
        let mut fabric = Self::new(views);
        for (id, &slots) in held {
            if let Some(&host) = fabric.by_id.get(id.as_str()) {
                fabric.used[host] = fabric.used[host].saturating_add(slots);
            }
        }
        fabric
    }

    fn new(views: &'a [HostView]) -> Self {
        let mut hosts = Vec::with_capacity(views.len());
        let mut by_id = HashMap::with_capacity(views.len());
        let mut domain_numbers: HashMap<&str, usize> = HashMap::new();
        let mut domain_of = Vec::with_capacity(views.len());
        for view in views {
            if by_id.contains_key(view.id.as_str()) {
                continue;
            }
            by_id.insert(view.id.as_str(), hosts.len());
            hosts.push(view);
            let next = domain_numbers.len();
            domain_of.push(*domain_numbers.entry(&view.fault_domain).or_insert(next));
        }
        let used = vec![0; hosts.len()];
        Fabric {
            domains: domain_numbers.len(),
            hosts,
            by_id,
            domain_of,
            used,
        }
    }

    fn free(&self, host: usize) -> u64 {
        u64::from(self.hosts[host].capacity).saturating_sub(self.used[host])
    }

    /// Ready, and the role may run there.
    fn open_to(&self, host: usize, demand: &Demand) -> bool {
        self.hosts[host].state == HostState::Ready && demand.admits(self.hosts[host])
    }

    /// Pass one: the instances of `demand` that stay where they are, their
    /// slots counted as used.
    fn keep(&mut self, demand: &Demand, now: Option<&RolePlacement>) -> RolePlacement {
        let mut kept = RolePlacement::new();
        let Some(now) = now else { return kept };
        let mut hosts_serving = vec![false; self.hosts.len()];
        for (&index, host_id) in now.range(..demand.count) {
            let Some(&host) = self.by_id.get(host_id.as_str()) else {
                continue;
            };
            let stays = matches!(
                self.hosts[host].state,
                HostState::Ready | HostState::Suspect
            ) && demand.admits(self.hosts[host])
                && !(demand.one_per_host && hosts_serving[host])
                && self.free(host) >= demand.cost();
            if stays {
                hosts_serving[host] = true;
                self.used[host] += demand.cost();
                kept.insert(index, host_id.clone());
            }
        }
        kept
    }

    /// Pass two: places the missing indices of `demand`, lowest first;
    /// returns how many found no host.
    fn fill(&mut self, demand: &Demand, placement: &mut RolePlacement) -> u32 {
        let mut on_host = vec![0u32; self.hosts.len()];
        let mut in_domain = vec![0u32; self.domains];
        for host_id in placement.values() {
            if let Some(&host) = self.by_id.get(host_id.as_str()) {
                on_host[host] += 1;
                in_domain[self.domain_of[host]] += 1;
            }
        }
        let open: Vec<usize> = (0..self.hosts.len())
            .filter(|&host| self.open_to(host, demand))
            .collect();
        let cost = demand.cost();
        let mut placed = u32::try_from(placement.len()).unwrap_or(u32::MAX);
        let mut index = 0u32;
        while placed < demand.count {
            // A free index below count exists while placed < count.
            while placement.contains_key(&index) {
                index += 1;
            }
            let best = open
                .iter()
                .copied()
                .filter(|&host| self.free(host) >= cost)
                .filter(|&host| !(demand.one_per_host && on_host[host] > 0))
                .min_by_key(|&host| {
                    let capacity = u64::from(self.hosts[host].capacity.max(1));
                    (
                        in_domain[self.domain_of[host]],
                        on_host[host],
                        self.used[host] * 1000 / capacity,
                        self.hosts[host].id.as_str(),
                    )
                });
            // Nothing placed later in this pass frees room, so the rest of
            // the role cannot be placed either.
            let Some(host) = best else {
                return demand.count - placed;
            };
            self.used[host] += cost;
            on_host[host] += 1;
            in_domain[self.domain_of[host]] += 1;
            placement.insert(index, self.hosts[host].id.clone());
            placed += 1;
        }
        0
    }
}

/// The demands in placement order (service, then role), each key once (the
/// first demand for a key wins).
fn in_order(demands: &[Demand]) -> Vec<&Demand> {
    let mut ordered: Vec<&Demand> = demands.iter().collect();
    ordered.sort_by(|a, b| (&a.service, &a.role).cmp(&(&b.service, &b.role)));
    ordered.dedup_by(|later, first| later.service == first.service && later.role == first.role);
    ordered
}

/// Places every demanded instance: keeps what may stay (see the module's
/// doc), drops what may not and every role not demanded, places what is
/// missing, and counts what found no host. Placing a plan's own output
/// again gives the same plan.
pub fn place(hosts: &[HostView], demands: &[Demand], current: &Current) -> Plan {
    place_on(&mut Fabric::new(hosts), &in_order(demands), current)
}

/// [`place`], beside instances that stay where they are whatever happens
/// (a service whose new desired state the leader refused keeps running
/// as it was placed): `held` is the slots they hold on each host (see
/// [`slots_held`]), used before anything is kept or placed.
pub fn place_beside(
    hosts: &[HostView],
    held: &BTreeMap<String, u64>,
    demands: &[Demand],
    current: &Current,
) -> Plan {
    place_on(
        &mut Fabric::holding(hosts, held),
        &in_order(demands),
        current,
    )
}

/// The slots `placements` hold on each host id: each instance the cost of
/// its role's demand in `demands`, at least one slot (an instance whose
/// demand is unknown holds one).
pub fn slots_held(demands: &[Demand], placements: &Current) -> BTreeMap<String, u64> {
    let cost: BTreeMap<RoleKey, u64> = demands
        .iter()
        .map(|demand| (demand.key(), demand.cost()))
        .collect();
    let mut held = BTreeMap::<String, u64>::new();
    for (key, placement) in placements {
        let each = cost.get(key).copied().unwrap_or(1);
        for host in placement.values() {
            let slots = held.entry(host.clone()).or_default();
            *slots = slots.saturating_add(each);
        }
    }
    held
}

fn place_on(fabric: &mut Fabric<'_>, demands: &[&Demand], current: &Current) -> Plan {
    // Keep first for every role, so one role's new instances never take the
    // room another role's running instances hold.
    let mut kept: Vec<RolePlacement> = demands
        .iter()
        .map(|demand| fabric.keep(demand, current.get(&demand.key())))
        .collect();
    let mut plan = Plan::default();
    for (demand, placement) in demands.iter().zip(kept.iter_mut()) {
        let missing = fabric.fill(demand, placement);
        if missing > 0 {
            plan.unplaced.insert(demand.key(), missing);
        }
    }
    plan.placements = demands
        .iter()
        .map(|demand| demand.key())
        .zip(kept)
        .collect();
    plan
}

/// Whether every demand fits: runs [`place`] and refuses, naming the
/// numbers, when any role has instances no host can take, e.g. `service
/// shop role worker needs 12 slots on hosts with zone=a; the fabric has 8
/// free there (3 hosts)`. Several roles short: the first is named and the
/// others counted.
pub fn check_fits(
    hosts: &[HostView],
    demands: &[Demand],
    current: &Current,
) -> Result<(), FabricError> {
    let ordered = in_order(demands);
    let mut fabric = Fabric::new(hosts);
    let plan = place_on(&mut fabric, &ordered, current);
    let mut short = ordered
        .iter()
        .filter(|demand| plan.unplaced.contains_key(&demand.key()));
    let Some(first) = short.next() else {
        return Ok(());
    };
    let mut message = shortfall(&fabric, first, &plan);
    let others = short.count();
    if others > 0 {
        let roles = if others == 1 { "role" } else { "roles" };
        message.push_str(&format!(" (and {others} more {roles} cannot be placed)"));
    }
    Err(FabricError::Refused(message))
}

/// Why `demand` is short in `plan`, with the numbers; `fabric.used` is the
/// plan's.
fn shortfall(fabric: &Fabric<'_>, demand: &Demand, plan: &Plan) -> String {
    let (service, role) = (&demand.service, &demand.role);
    let cost = demand.cost();
    let mut role_on_host = vec![0u64; fabric.hosts.len()];
    for host_id in plan
        .placements
        .get(&demand.key())
        .into_iter()
        .flat_map(|placement| placement.values())
    {
        if let Some(&host) = fabric.by_id.get(host_id.as_str()) {
            role_on_host[host] += cost;
        }
    }
    // What the role could hold: the room left on the hosts open to it, plus
    // what it holds already (on those and on suspect hosts it keeps).
    let (mut open_hosts, mut serving_hosts, mut free, mut room) = (0u64, 0u64, 0u64, 0u64);
    for (host, &held) in role_on_host.iter().enumerate() {
        let open = fabric.open_to(host, demand);
        let holds = held > 0;
        if !open && !holds {
            continue;
        }
        open_hosts += u64::from(open);
        serving_hosts += 1;
        let left = if open { fabric.free(host) } else { 0 };
        free += left + held;
        room += if demand.one_per_host {
            u64::from(holds || left >= cost)
        } else {
            held / cost + left / cost
        };
    }
    let labels = demand.where_it_may_run();
    let with = labels
        .as_deref()
        .map(|labels| format!(" with {labels}"))
        .unwrap_or_default();
    let there = if labels.is_some() { " there" } else { "" };
    if demand.one_per_host && serving_hosts < u64::from(demand.count) {
        return format!(
            "service {service} role {role} needs {} hosts{with}; the fabric has {serving_hosts} ready{there}",
            demand.count
        );
    }
    let needed = u64::from(demand.count) * cost;
    let on = match labels {
        Some(_) => format!("on hosts{with}"),
        None => "on ready hosts".to_owned(),
    };
    let hosts = if open_hosts == 1 { "host" } else { "hosts" };
    let mut message = format!(
        "service {service} role {role} needs {needed} slots {on}; the fabric has {free} free{there} ({open_hosts} {hosts})"
    );
    if free >= needed {
        // Enough slots in all, split so no host holds another instance.
        message.push_str(&format!(
            ", room for only {room} of its {} instances of {cost} slots",
            demand.count
        ));
    }
    message
}

#[cfg(test)]
#[path = "placement/tests.rs"]
mod tests;
