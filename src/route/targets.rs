//! The routes of a running configuration: the table, and for each route what its queries
//! go out on, a group of upstream pools (TLS, one per serving thread) or a plain-DNS
//! forwarder. Thin: the choice is [`RouteTable`]'s, the forwarding the pools' and
//! [`PlainUpstream`]'s.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock, Weak},
    time::Duration,
};

use hickory_proto::rr::Name;
use prometheus_client::metrics::counter::Counter;
use tracing::{info, warn};

use super::{RouteId, RoutePlan, RouteTable, default_set, domain_key, plan, search::read_search};
use crate::{
    config::{AddressSource, Config, UpstreamConfig},
    message::ClientQuery,
    metrics::metrics,
    tls::TlsSetupError,
    upstream::{
        connection::{Connection, ConnectionInfo},
        plain::PlainUpstream,
        pool::{ForwardError, Pool, watch_resolv_conf},
        resolv_conf::ResolvConfWatch,
    },
};

/// How often a plain route's resolv.conf is checked for changes (as the pools' watch).
const RESOLV_CONF_POLL: Duration = Duration::from_secs(2);
/// A plain route asks its next server when the one before has not answered in this long.
const PLAIN_STAGGER: Duration = Duration::from_millis(250);

/// Every route of a configuration generation; empty when no upstream has `domains` or
/// `route_search`.
#[derive(Default)]
pub struct Routes {
    table: Arc<LiveTable>,
    routes: Vec<Route>,
}

/// The route table: the configured domains, and the search domains of the route_search
/// upstreams' files as they are now (rebuilt when a file's change).
#[derive(Default)]
struct LiveTable {
    fixed: Vec<(Box<[u8]>, RouteId)>,
    searched: Mutex<Vec<(RouteId, Vec<String>)>>,
    current: RwLock<RouteTable>,
}

impl LiveTable {
    fn new(fixed: Vec<(Box<[u8]>, RouteId)>) -> Self {
        let current = RwLock::new(RouteTable::new(fixed.iter().cloned()));
        Self { fixed, searched: Mutex::default(), current }
    }

    /// Sets `route`'s search domains; true when they changed. A configured domain keeps
    /// its route when a file lists it too.
    fn set_search(&self, route: RouteId, domains: Vec<String>) -> bool {
        let mut searched = self.searched.lock().unwrap_or_else(|e| e.into_inner());
        match searched.iter_mut().find(|(r, _)| *r == route) {
            Some((_, now)) if *now == domains => return false,
            Some((_, now)) => *now = domains,
            None => searched.push((route, domains)),
        }
        let dynamic =
            searched.iter().flat_map(|(r, ds)| ds.iter().filter_map(|d| domain_key(d)).map(|k| (k, *r)));
        let table = RouteTable::new(self.fixed.iter().cloned().chain(dynamic));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = table;
        true
    }

    fn route(&self, name: &Name) -> Option<RouteId> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).route(name)
    }
}

/// One route: its name (its domains, for logs and metrics) and where its queries go.
pub struct Route {
    pub name: Arc<str>,
    target: Target,
    /// `stubborn_route_queries_total` for this route.
    queries: Counter,
    /// The connectivity checks of a captive-portal upstream ([`super::captive`]).
    captive: bool,
}

enum Target {
    /// One pool per serving thread, like the default set's.
    Pools(Vec<Pool>),
    Plain(Arc<PlainUpstream>),
}

/// Where one query goes: a route's, or the default set's pool.
pub enum Upstream<'a> {
    Pool(&'a Pool, Option<&'a Route>),
    Plain(&'a PlainUpstream, &'a Route),
}

/// What answered: a connection of a pool (whose keepalive an answer may set), or a
/// plain-DNS server.
pub enum Via {
    Connection(Connection),
    Plain(Arc<ConnectionInfo>),
}

impl Via {
    pub fn info(&self) -> Arc<ConnectionInfo> {
        match self {
            Via::Connection(c) => c.shared_info(),
            Via::Plain(info) => info.clone(),
        }
    }

    /// RFC 7828: a server's idle timeout applies to the connection it came on.
    pub fn honour_keepalive(&self, timeout: Duration) {
        if let Via::Connection(c) = self {
            c.honour_keepalive(timeout);
        }
    }
}

impl Upstream<'_> {
    pub async fn forward(&self, query: &ClientQuery) -> Result<(Vec<u8>, Via), ForwardError> {
        match self {
            Upstream::Pool(pool, route) => {
                match route {
                    Some(route) => {
                        route.queries.inc();
                    }
                    None => metrics().default_route_query(),
                }
                pool.forward(query).await.map(|(wire, conn)| (wire, Via::Connection(conn)))
            }
            Upstream::Plain(plain, route) => {
                route.queries.inc();
                metrics().plain_query();
                plain.forward(query).await.map(|(wire, info)| (wire, Via::Plain(info)))
            }
        }
    }

    /// Whether the answer may be cached: not a captive portal's (it lies about every name
    /// for as long as the portal is up).
    pub fn cacheable(&self) -> bool {
        match self {
            Upstream::Pool(_, route) => !route.is_some_and(|r| r.captive),
            Upstream::Plain(_, route) => !route.captive,
        }
    }

    /// The route's name, for the query log; None for the default set.
    pub fn route_name(&self) -> Option<Arc<str>> {
        match self {
            Upstream::Pool(_, route) => route.map(|r| r.name.clone()),
            Upstream::Plain(_, route) => Some(route.name.clone()),
        }
    }
}

impl Routes {
    /// The routes of `config`, with `pools` pools per TLS route (one per serving thread).
    /// Must be called inside the runtime: resolv_conf upstreams get their watches.
    pub fn build(config: &Config, pools: usize) -> Result<Self, TlsSetupError> {
        let plans = plan(&config.upstreams);
        let mut entries = Vec::new();
        let mut routes = Vec::with_capacity(plans.len());
        for (id, route) in plans.iter().enumerate() {
            entries.extend(route.domains.iter().filter_map(|d| domain_key(d)).map(|k| (k, id as RouteId)));
            let target = if route.plain {
                Target::Plain(plain_target(config, route))
            } else {
                let pools = Pool::group(&config.with_upstreams(&route.upstreams), pools)?;
                watch_resolv_conf(&pools, &config.server.listen);
                Target::Pools(pools)
            };
            let name = route.name(&config.upstreams);
            routes.push(Route {
                queries: metrics().route_queries(&name),
                name: name.into(),
                target,
                captive: route.captive,
            });
        }
        let table = Arc::new(LiveTable::new(entries));
        for (id, route) in plans.iter().enumerate().filter(|(_, r)| r.search) {
            if let AddressSource::ResolvConf(path) = &config.upstreams[route.upstreams[0]].source {
                follow_search(&table, id, path.clone(), routes[id].name.clone());
            }
        }
        Ok(Self { table, routes })
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route that answers `name`, if a route claims it.
    pub fn route(&self, name: &Name) -> Option<&Route> {
        if self.routes.is_empty() {
            return None;
        }
        self.table.route(name).map(|id| &self.routes[id])
    }

    /// Where a query for `name` goes from serving thread `shard`: its route, or `default`
    /// (that thread's pool of the default set).
    pub fn upstream<'a>(&'a self, name: &Name, shard: usize, default: &'a Pool) -> Upstream<'a> {
        match self.route(name) {
            None => Upstream::Pool(default, None),
            // The portal's resolver only while no default upstream is connected: once one
            // is, nothing more goes in clear text.
            Some(route) if route.captive && default.connected() => Upstream::Pool(default, None),
            Some(route) => match &route.target {
                Target::Pools(pools) => Upstream::Pool(&pools[shard % pools.len()], Some(route)),
                Target::Plain(plain) => Upstream::Plain(plain, route),
            },
        }
    }

    /// The pools of each TLS route (for metrics).
    pub fn pool_groups(&self) -> Vec<Vec<Pool>> {
        self.routes
            .iter()
            .filter_map(|r| match &r.target {
                Target::Pools(pools) => Some(pools.clone()),
                Target::Plain(_) => None,
            })
            .collect()
    }

    /// Each route's name, in config order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| &*r.name)
    }
}

impl Config {
    /// This config with only the upstreams at `indexes` (a route's, or the default set).
    pub fn with_upstreams(&self, indexes: &[usize]) -> Config {
        let mut config = self.clone();
        config.upstreams = indexes.iter().map(|&i| self.upstreams[i].clone()).collect();
        config
    }

    /// This config with only its default set: the upstreams without `domains`.
    pub fn default_set(&self) -> Config {
        self.with_upstreams(&default_set(&self.upstreams))
    }
}

/// A plain route's forwarder: every address of its upstreams on their `plain_port`, in
/// config order; resolv_conf upstreams follow their file.
fn plain_target(config: &Config, route: &RoutePlan) -> Arc<PlainUpstream> {
    let upstreams: Vec<&UpstreamConfig> = route.upstreams.iter().map(|&i| &config.upstreams[i]).collect();
    let ports: Vec<u16> = upstreams.iter().map(|u| u.plain_port).collect();
    let addresses: Vec<Vec<IpAddr>> = upstreams.iter().map(|u| u.addresses.clone()).collect();
    let first = route.upstreams[0];
    let plain =
        Arc::new(PlainUpstream::new(first, &upstreams[0].name, servers(&addresses, &ports), PLAIN_STAGGER));
    info!(route = %route.domains.join(","), servers = ?plain.servers(), "plain route: these names go in clear text");
    let watched: Vec<(usize, ResolvConfWatch)> = upstreams
        .iter()
        .enumerate()
        .filter_map(|(k, u)| match &u.source {
            AddressSource::ResolvConf(path) => {
                Some((k, ResolvConfWatch::new(path.clone(), &config.server.listen)))
            }
            AddressSource::Static => None,
        })
        .collect();
    if !watched.is_empty() {
        tokio::spawn(follow_resolv_conf(Arc::downgrade(&plain), watched, addresses, ports));
    }
    plain
}

/// Routes the search domains of `path` to route `id` now, and as the file changes (until
/// the routes are dropped).
fn follow_search(table: &Arc<LiveTable>, id: RouteId, path: PathBuf, name: Arc<str>) {
    let read = move |path: &Path| match read_search(path) {
        Ok(domains) => Some(domains),
        Err(err) => {
            warn!(path = %path.display(), %err, "cannot read resolv.conf; keeping the search domains routed");
            None
        }
    };
    let domains = read(&path).unwrap_or_default();
    info!(route = %name, ?domains, path = %path.display(), "routing the search domains of resolv.conf");
    table.set_search(id, domains);
    let weak = Arc::downgrade(table);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RESOLV_CONF_POLL);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(table) = weak.upgrade() else { return };
            if let Some(domains) = read(&path)
                && table.set_search(id, domains.clone())
            {
                info!(route = %name, ?domains, path = %path.display(), "resolv.conf's search domains changed");
            }
        }
    });
}

fn servers(addresses: &[Vec<IpAddr>], ports: &[u16]) -> Vec<SocketAddr> {
    addresses
        .iter()
        .zip(ports)
        .flat_map(|(ips, &port)| ips.iter().map(move |ip| SocketAddr::new(*ip, port)))
        .collect()
}

/// Keeps a plain route's servers those its resolv.conf files list; ends with the route.
async fn follow_resolv_conf(
    plain: Weak<PlainUpstream>,
    mut watched: Vec<(usize, ResolvConfWatch)>,
    mut addresses: Vec<Vec<IpAddr>>,
    ports: Vec<u16>,
) {
    for (_, watch) in &mut watched {
        let _ = watch.poll(); // the config load already read the current list
    }
    let mut tick = tokio::time::interval(RESOLV_CONF_POLL);
    loop {
        tick.tick().await;
        let Some(plain) = plain.upgrade() else { return };
        let mut changed = false;
        for (k, watch) in &mut watched {
            match watch.poll() {
                None => {}
                Some(Ok(list)) => {
                    addresses[*k] = list;
                    changed = true;
                }
                Some(Err(err)) => warn!(
                    path = %watch.path().display(),
                    %err,
                    "cannot re-read resolv.conf; keeping the previous nameservers"
                ),
            }
        }
        if changed {
            let servers = servers(&addresses, &ports);
            info!(servers = ?servers, "resolv.conf changed: the plain route's servers");
            plain.set_servers(servers);
        }
    }
}
