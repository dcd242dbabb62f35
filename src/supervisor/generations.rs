//! The generations the master holds: each one's config and the sockets its
//! workers inherit. A reload keeps a socket whose address did not change (same
//! inode, nothing refused while the new generation boots); a socket no
//! generation uses any more is closed (and vacuumed) when the last one goes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::events::GenerationPlan;
use super::status::SocketStatus;
use crate::config::{self, Config, LoadOptions, Loaded};
use crate::socket::{self, Listener};

/// One generation's config and the sockets its workers inherit.
pub struct Generation {
    pub config: Arc<Config>,
    pub listeners: Vec<Arc<Listener>>,
    /// The `http` router's public listener, kept across reloads when unchanged.
    pub http_listener: Option<Arc<Listener>>,
}

pub struct Generations {
    /// The generation that serves.
    pub current: u64,
    by_id: HashMap<u64, Generation>,
    /// Every socket the master holds, shared by the generations that use it.
    open: Vec<Arc<Listener>>,
    /// The serving generation's `vacuum`: whether closed unix sockets are removed.
    vacuum: bool,
}

impl Generations {
    /// Generation 1, with the sockets `start` bound.
    pub fn first(
        config: Arc<Config>,
        listeners: Vec<Listener>,
        http_listener: Option<Listener>,
    ) -> Self {
        let open: Vec<Arc<Listener>> = listeners.into_iter().map(Arc::new).collect();
        let vacuum = config.vacuum;
        let mut by_id = HashMap::new();
        by_id.insert(
            1,
            Generation {
                config,
                listeners: open.clone(),
                http_listener: http_listener.map(Arc::new),
            },
        );
        Generations {
            current: 1,
            by_id,
            open,
            vacuum,
        }
    }

    pub fn get(&self, generation: u64) -> Option<&Generation> {
        self.by_id.get(&generation)
    }

    /// Reads the config for a reload. It may block (an `@(exec://…)` runs for
    /// up to 30 s, a file on a slow disk): call it off the master's loop.
    pub fn read(ini: &Path, options: &LoadOptions) -> Result<Loaded, String> {
        config::load(ini, options).map_err(|e| e.to_string())
    }

    /// Prepares a reload's sockets from the config [`Generations::read`] gave;
    /// on error nothing is left behind. The answer is what
    /// [`super::events::Event::ConfigLoaded`] carries.
    pub fn prepare(&mut self, generation: u64, loaded: Loaded) -> Result<GenerationPlan, String> {
        for w in &loaded.warnings {
            warn!(warning = %w, "config");
        }
        let config = loaded.config;
        if let Some(current) = self.by_id.get(&self.current) {
            for (key, changed) in restart_only_changes(&current.config, &config) {
                if changed {
                    warn!(
                        key,
                        "changed in the config, but applies only after a restart"
                    );
                }
            }
        }
        let mut listeners = Vec::new();
        for spec in &config.sockets {
            let existing = self
                .open
                .iter()
                .find(|l| l.spec.address == spec.address && l.spec.protocol == spec.protocol);
            let listener = match existing {
                Some(l) => l.clone(),
                None => {
                    let options = socket::BindOptions {
                        chmod: config.chmod_socket,
                        chown: config.chown_socket.clone(),
                        backlog: config.listen,
                    };
                    let (l, warnings) = socket::bind(spec, &options).map_err(|e| {
                        format!("{}:{}: {}", config.ini_path.display(), spec.line, e)
                    })?;
                    for w in warnings {
                        warn!(warning = %w, "socket");
                    }
                    info!(address = %socket::describe(&spec.address), protocol = spec.protocol.as_str(), "socket bound for the new generation");
                    let l = Arc::new(l);
                    self.open.push(l.clone());
                    l
                }
            };
            listeners.push(listener);
        }
        let http_listener = self.http_listener_for(&config)?;
        let plan = plan_of(&config);
        self.by_id.insert(
            generation,
            Generation {
                config: Arc::new(config),
                listeners,
                http_listener,
            },
        );
        Ok(plan)
    }

    /// The router's public listener for a new generation: the one a generation
    /// already has if the address is unchanged (its clients notice nothing), else
    /// a new bind.
    fn http_listener_for(&self, config: &Config) -> Result<Option<Arc<Listener>>, String> {
        let Some(http) = &config.http else {
            return Ok(None);
        };
        let running = self
            .by_id
            .values()
            .filter_map(|g| g.http_listener.as_ref())
            .find(|l| l.spec.address == http.address);
        if let Some(l) = running {
            return Ok(Some(l.clone()));
        }
        let (l, warnings) = crate::router::supervise::bind_public(config)
            .map_err(|e| format!("{}:{}: {}", config.ini_path.display(), http.line, e))?;
        for w in warnings {
            warn!(warning = %w, "socket");
        }
        info!(address = %socket::describe(&http.address), "http router address bound for the new generation");
        Ok(Some(Arc::new(l)))
    }

    /// `generation` now serves; returns its config.
    pub fn activate(&mut self, generation: u64) -> Option<Arc<Config>> {
        self.current = generation;
        let g = self.by_id.get(&generation)?;
        self.vacuum = g.config.vacuum;
        Some(g.config.clone())
    }

    /// Forgets `generation` and closes the sockets no other generation uses.
    pub fn release(&mut self, generation: u64) {
        self.by_id.remove(&generation);
        let in_use: Vec<Arc<Listener>> = self
            .by_id
            .values()
            .flat_map(|g| g.listeners.iter().cloned())
            .collect();
        let vacuum = self.vacuum;
        self.open.retain(|l| {
            let used = in_use.iter().any(|u| Arc::ptr_eq(u, l));
            if !used {
                info!(address = %socket::describe(&l.spec.address), "socket no longer configured, closed");
                if vacuum {
                    socket::vacuum(l);
                }
            }
            used
        });
    }

    /// Stops listening: closes every socket copy the master holds (workers keep
    /// theirs until they exit) and vacuums them if configured.
    pub fn close_listeners(&mut self) {
        for g in self.by_id.values_mut() {
            g.listeners.clear();
            g.http_listener = None;
        }
        for l in self.open.drain(..) {
            if self.vacuum {
                socket::vacuum(&l);
            }
        }
    }

    /// The serving generation's config.
    pub fn current_config(&self) -> Option<&Config> {
        self.by_id.get(&self.current).map(|g| &*g.config)
    }

    /// Every socket the master holds, with its listen queue where the kernel says.
    pub fn listener_infos(&self) -> Vec<crate::metrics::ListenerInfo> {
        use std::os::fd::AsFd;
        self.open
            .iter()
            .map(|l| crate::metrics::ListenerInfo {
                name: l.local_address(),
                proto: l.spec.protocol.as_str(),
                queue: crate::metrics::queue::listen_queue(l.fd.as_fd()),
            })
            .collect()
    }

    pub fn sockets(&self) -> Vec<SocketStatus> {
        self.open
            .iter()
            .map(|l| SocketStatus {
                name: l.local_address(),
                proto: l.spec.protocol.as_str().to_owned(),
            })
            .collect()
    }
}

/// The settings the state machine decides with.
pub fn plan_of(config: &Config) -> GenerationPlan {
    GenerationPlan {
        processes: config.processes.max(1) as usize,
        mercy: config.worker_reload_mercy,
        harakiri: config.harakiri,
        harakiri_grace: config
            .harakiri_graceful_timeout
            .unwrap_or(crate::worker::contract::HARAKIRI_DUMP_GRACE),
        harakiri_graceful_signal: config
            .harakiri_graceful_timeout
            .map(|_| config.harakiri_graceful_signal),
        one_by_one: config.reload_one_by_one,
        preload: !config.lazy_apps,
        lifetime: (config.lifetimes.max_worker_lifetime > 0)
            .then(|| Duration::from_secs(config.lifetimes.max_worker_lifetime)),
        lifetime_delta: Duration::from_secs(config.lifetimes.max_worker_lifetime_delta),
        evil_rss: config.lifetimes.evil_reload_on_rss_mb << 20,
        evil_as: config.lifetimes.evil_reload_on_as_mb << 20,
        cheaper: config.lifetimes.cheaper.clone(),
    }
}

/// Keys a reload cannot apply: they were used before the privilege drop or
/// shape the master process itself.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<(&'static str, bool)> {
    vec![
        ("uid", old.uid != new.uid),
        ("gid", old.gid != new.gid),
        ("max-fd", old.max_fd != new.max_fd),
        ("pidfile", old.pidfile != new.pidfile),
        ("daemonize", old.daemonize != new.daemonize),
        ("logto", old.logto != new.logto),
        ("log-maxsize", old.log_maxsize != new.log_maxsize),
        ("logger", old.logging.loggers != new.logging.loggers),
        (
            "req-logger",
            old.logging.req_loggers != new.logging.req_loggers,
        ),
        ("log-date", old.logging.date != new.logging.date),
        ("log-encoder", old.logging.encoders != new.logging.encoders),
        (
            "log-req-encoder",
            old.logging.req_encoders != new.logging.req_encoders,
        ),
        (
            "log-backupname",
            old.logging.backupname != new.logging.backupname,
        ),
        (
            "chmod-socket (for sockets kept open)",
            old.chmod_socket != new.chmod_socket,
        ),
        (
            "chown-socket (for sockets kept open)",
            old.chown_socket != new.chown_socket,
        ),
        ("listen (for sockets kept open)", old.listen != new.listen),
    ]
}
