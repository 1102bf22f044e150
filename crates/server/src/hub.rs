//! The agents connected to this replica, and local notifications about
//! tasks (log grew, status changed) for the live log followers.

use std::collections::HashMap;
use std::sync::Mutex;

use testbed_core::protocol::ServerMessage;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

struct Conn {
    session: u64,
    tx: mpsc::UnboundedSender<ServerMessage>,
}

pub struct Hub {
    agents: Mutex<HashMap<Uuid, Conn>>,
    next_session: std::sync::atomic::AtomicU64,
    tasks: broadcast::Sender<Uuid>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            agents: Mutex::new(HashMap::new()),
            next_session: Default::default(),
            tasks: broadcast::channel(4096).0,
        }
    }
}

impl Hub {
    /// Registers a session for `agent`, replacing (and so closing) any older
    /// session of the same agent on this replica. Returns the session number.
    pub fn attach(&self, agent: Uuid, tx: mpsc::UnboundedSender<ServerMessage>) -> u64 {
        let session = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let old = self.lock().insert(agent, Conn { session, tx });
        drop(old);
        session
    }

    /// Forgets the session, unless a newer one of the same agent replaced it.
    pub fn detach(&self, agent: Uuid, session: u64) {
        let mut map = self.lock();
        if map.get(&agent).is_some_and(|c| c.session == session) {
            map.remove(&agent);
        }
    }

    pub fn is_local(&self, agent: &Uuid) -> bool {
        self.lock().contains_key(agent)
    }

    /// Sends to the agent if it is connected here. Returns whether it was.
    pub fn send(&self, agent: &Uuid, msg: ServerMessage) -> bool {
        self.lock()
            .get(agent)
            .is_some_and(|c| c.tx.send(msg).is_ok())
    }

    pub fn connected(&self) -> usize {
        self.lock().len()
    }

    /// Wakes whoever follows this task (log or status).
    pub fn task_changed(&self, task: Uuid) {
        let _ = self.tasks.send(task);
    }

    pub fn subscribe_tasks(&self) -> broadcast::Receiver<Uuid> {
        self.tasks.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Conn>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }
}
