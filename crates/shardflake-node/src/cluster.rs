//! The cluster backing: a lease keeper leases the node id from the coordinators, which
//! persist every reservation and counter block; every lease gets its own generator.

use std::sync::{Arc, Mutex};

use shardflake::{format_rfc3339_ms, LayoutError, TemporalGenerator};
use shardflake_client::{
    ActiveLease, CoordinatorClient, KeeperConfig, LeaseKeeper, MemberState, Transport,
};
use tokio::sync::{watch, Notify};
use tracing::{error, info, warn};

use crate::config::{ClusterConfig, NodeConfig};
use crate::namespaces::{LeaseRef, Namespaces};
use crate::source::{off_runtime, DynClock, Generator, IdSource};
use crate::standalone::TEMPORAL_PREFETCH_MS;
use crate::state::{generator_policy, Shared, StartError};
use crate::store_generation;

/// A cluster node's backing: the lease keeper and what it reported.
pub(crate) struct Cluster {
    /// The lease keeper (taken at shutdown).
    keeper: Mutex<Option<LeaseKeeper>>,
    pub(crate) state: watch::Receiver<MemberState>,
    /// A configuration error that stops the node (coordinators of different stores, a
    /// layout other than the cluster's).
    failed: Mutex<Option<String>>,
    /// Notified when `failed` is set.
    pub(crate) failed_notify: Notify,
    /// The namespaces this node serves.
    pub(crate) namespaces: Arc<Namespaces>,
    /// The coordinators' client (its generation is kept at shutdown).
    client: Arc<CoordinatorClient>,
    /// Where the store generation is kept, and the task keeping it.
    generation_dir: std::path::PathBuf,
    generation_keeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The node's clock: whether file writes go to the blocking pool ([`off_runtime`]).
    clock: DynClock,
}

/// What a deterministic simulation replaces in cluster mode; the defaults are production's.
#[derive(Debug, Clone, Default)]
pub struct ClusterHooks {
    /// Carries the requests to the coordinators (default: real TCP, `reqwest`).
    pub transport: Option<Arc<dyn Transport>>,
    /// Seeds the lease keeper's retry jitter (default: from the operating system).
    pub jitter_seed: Option<u64>,
    /// Draws the lease secrets from a PRNG with this seed (default: the operating system's
    /// cryptographic source). Predictable: for a deterministic simulation only.
    pub secret_seed: Option<u64>,
    /// The holder name shown by the coordinators (default: `$HOSTNAME:port`).
    pub name: Option<String>,
}

/// Starts the lease keeper. Needs a tokio runtime. The caller connects it to the node with
/// [`connect`] once the shared state exists.
pub(crate) fn open(
    config: &NodeConfig,
    clock: &DynClock,
    hooks: ClusterHooks,
) -> Result<(Cluster, LeaseKeeper), StartError> {
    let cluster = config
        .cluster
        .as_ref()
        .expect("cluster mode needs a cluster configuration");
    // A given transport carries the requests itself; the TLS client is built only otherwise
    // (loading the system's roots costs milliseconds per start).
    let mut client = match hooks.transport {
        Some(t) => CoordinatorClient::over(cluster.urls.clone(), None, t),
        None => CoordinatorClient::new(cluster.urls.clone(), None)
            .and_then(|c| c.with_tls(&cluster.tls)),
    }
    .map_err(|e| StartError::Cluster(e.to_string()))?;
    if let Some(token) = &cluster.token {
        client = client.with_bearer(token.clone());
    }
    // The highest store generation seen before this start: a store restored from a
    // backup since is refused, and told so.
    let remembered = store_generation::load(&config.state_dir)?;
    let written = remembered.as_ref().map(|g| g.generation);
    let client = Arc::new(client.with_generation(remembered));
    let namespaces = Namespaces::new(client.clone());
    let mut keeper_config = keeper_config(config, cluster, clock);
    keeper_config.jitter_seed = hooks.jitter_seed;
    keeper_config.secret_seed = hooks.secret_seed;
    if let Some(name) = hooks.name {
        keeper_config.name = name;
    }
    keeper_config.url = Some(cluster.advertised(config.listen));
    let usage = namespaces.clone();
    keeper_config.ns_usage = Some(Arc::new(move || usage.usage()));
    let held = namespaces.clone();
    keeper_config.ns_held = Some(Arc::new(move || held.held()));
    let generation_keeper = store_generation::spawn_keeper(
        config.state_dir.clone(),
        client.clone(),
        written,
        clock.clone(),
    );
    let keeper = LeaseKeeper::start(client.clone(), keeper_config);
    info!(
        coordinators = %cluster.urls.join(","),
        standby = cluster.standby,
        lease_ttl_ms = cluster.lease_ttl_ms,
        layout = %config.layout_label(),
        "cluster mode: leasing the node id from the coordinator"
    );
    let backing = Cluster {
        keeper: Mutex::new(None),
        state: keeper.subscribe(),
        failed: Mutex::new(None),
        failed_notify: Notify::new(),
        namespaces,
        client,
        generation_dir: config.state_dir.clone(),
        generation_keeper: Mutex::new(Some(generation_keeper)),
        clock: clock.clone(),
    };
    Ok((backing, keeper))
}

/// Swaps a generator in for every lease `keeper` holds, and fences the node without one.
pub(crate) fn connect(shared: &Arc<Shared>, keeper: LeaseKeeper) {
    let watcher = shared.clone();
    keeper.watch(move |state| on_member_state(&watcher, state));
    if let Some(c) = shared.cluster() {
        *c.keeper.lock().expect("keeper mutex") = Some(keeper);
    }
}

impl Cluster {
    /// The configuration error that stops the node, if one happened.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failed.lock().expect("failed mutex").clone()
    }

    /// Stops issuing (revokes the lease's reservation), gives the unused tails of the
    /// namespace blocks back under `lease`, then the node id.
    pub(crate) async fn release(&self, lease: Option<LeaseRef>) {
        self.namespaces.give_back(lease).await;
        let keeper = self.keeper.lock().expect("keeper mutex").take();
        if let Some(k) = keeper {
            k.shutdown().await;
        }
        self.keep_generation().await;
    }

    /// Writes the store generation one last time (clean shutdown).
    async fn keep_generation(&self) {
        if let Some(k) = self.generation_keeper.lock().expect("keeper mutex").take() {
            k.abort();
        }
        let Some(stamp) = self.client.generation() else {
            return;
        };
        let (dir, id) = (self.generation_dir.clone(), self.client.store_id());
        let written = off_runtime(&self.clock, move || {
            store_generation::store(&dir, &stamp, id)
        })
        .await;
        if let Ok(Err(e)) = written {
            warn!(error = %e, "cannot write the store generation at shutdown");
        }
    }
}

fn keeper_config(config: &NodeConfig, cluster: &ClusterConfig, clock: &DynClock) -> KeeperConfig {
    let name = format!(
        "{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into()),
        config.listen.port()
    );
    let mut k = KeeperConfig::new(name, cluster.lease_ttl_ms);
    k.standby = cluster.standby;
    k.clock = clock.clone();
    k.layout = config.layout.clone();
    k
}

/// Swaps in a generator for every new lease and fences the node when it has none.
fn on_member_state(shared: &Shared, state: &MemberState) {
    if shared.is_shutting_down() {
        return;
    }
    let Some(cluster) = shared.cluster() else {
        return;
    };
    if let MemberState::Failed { reason } = state {
        error!("cluster: stopping: {reason}");
        *cluster.failed.lock().expect("failed mutex") = Some(reason.clone());
        cluster.failed_notify.notify_waiters();
        shared.source.store(None);
        return;
    }
    let source = match state {
        MemberState::Active(lease) => match leased_source(shared, lease) {
            Ok(s) => {
                info!(
                    node_id = lease.host_id,
                    token = lease.token,
                    start_above = %format_rfc3339_ms(lease.start_above_ms),
                    "cluster: holding a lease; issuing"
                );
                Some(Arc::new(s))
            }
            Err(e) => {
                error!(
                    "cluster: cannot build a generator for node id {}: {e}",
                    lease.host_id
                );
                None
            }
        },
        other => {
            if let Some(reason) = other.not_ready_reason() {
                warn!("cluster: not issuing: {reason}");
            }
            None
        }
    };
    shared.source.store(source);
    shared.extended.notify_waiters();
}

fn leased_source(shared: &Shared, lease: &Arc<ActiveLease>) -> Result<IdSource, LayoutError> {
    // The keeper checked the grant's layout against the configured one (if any); the first
    // lease tells a node started without one which layout it serves.
    shared.learn_layout(&lease.layout);
    let generator = if lease.layout.is_temporal() {
        let g = Arc::new(lease.temporal().clock(shared.clock.clone()).build()?);
        lease.attach_temporal(g.clone());
        Generator::Temporal(g)
    } else {
        Generator::Snowflake(
            lease
                .snowflake()?
                .clock(shared.clock.clone())
                .policy(generator_policy(shared.config.clock_policy))
                .build()?,
        )
    };
    Ok(IdSource::leased(generator, lease.clone()))
}

/// Temporal layout: asks the coordinator (through the lease keeper) for a block for the
/// current shard when the generator has none, and for the next shard [`TEMPORAL_PREFETCH_MS`]
/// before it starts, so an idle node stays ready across shard boundaries instead of waiting
/// for the first request to ask. Repeated asks for a block already granted get the same
/// block back.
pub(crate) fn prefetch_blocks(now_ms: u64, g: &TemporalGenerator<DynClock>, lease: &ActiveLease) {
    if !lease.is_valid() {
        return;
    }
    let layout = &lease.layout;
    let Some(now_shard) = layout.tick_of(now_ms) else {
        return;
    };
    let shard = now_shard.max(g.usage().shard);
    if !g.has_block_for(shard) {
        lease.request_block(shard, 0);
    }
    let next = shard + 1;
    if layout.ms_of_tick(next).saturating_sub(now_ms) <= TEMPORAL_PREFETCH_MS
        && next <= layout.timestamp_field().max()
        && !g.has_block_for(next)
    {
        lease.request_block(next, 0);
    }
}
