//! The agents connected to this replica, the tasks sent to them, the load
//! placement balances, and local notifications about tasks (log grew,
//! status changed) for the live log followers.

use std::collections::HashMap;
use std::sync::Mutex;

use testbed_core::protocol::ServerMessage;
use testbed_core::task::Task;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

struct Conn {
    session: u64,
    tx: mpsc::UnboundedSender<ServerMessage>,
    /// Tasks sent on this session and not settled yet, as stored (with
    /// their `mod_revision`): a result settles such a task with one
    /// compare-and-swap write, without reading it first. Dropped with the
    /// session; a result that finds nothing here takes the reading path.
    in_flight: HashMap<Uuid, (Task, i64)>,
}

pub struct AgentSessions {
    agents: Mutex<HashMap<Uuid, Conn>>,
    next_session: std::sync::atomic::AtomicU64,
    tasks: broadcast::Sender<Uuid>,
    /// Outstanding work per agent, for placement.
    pub load: crate::placement::Load,
    /// The agents and reservations placement decides on, kept by a watch.
    pub fleet: crate::placement::FleetView,
}

impl Default for AgentSessions {
    fn default() -> Self {
        AgentSessions {
            agents: Mutex::new(HashMap::new()),
            next_session: Default::default(),
            tasks: broadcast::channel(4096).0,
            load: Default::default(),
            fleet: Default::default(),
        }
    }
}

impl AgentSessions {
    /// Registers a session for `agent`, replacing (and so closing) any older
    /// session of the same agent on this replica. Returns the session number.
    pub fn attach(&self, agent: Uuid, tx: mpsc::UnboundedSender<ServerMessage>) -> u64 {
        let session = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let old = self.lock().insert(
            agent,
            Conn {
                session,
                tx,
                in_flight: HashMap::new(),
            },
        );
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

    /// Sends `task` (stored at revision `rev`) to its agent if it is
    /// connected here, remembering it for the result. Returns whether it was.
    pub fn assign(&self, task: Task, rev: i64) -> bool {
        let mut map = self.lock();
        let Some(conn) = map.get_mut(&task.agent_uuid) else {
            return false;
        };
        let id = task.id;
        let msg = ServerMessage::Assign {
            traceparent: crate::engine::trace::traceparent(&task),
            task: Box::new(task.clone()),
        };
        if conn.tx.send(msg).is_err() {
            return false;
        }
        conn.in_flight.insert(id, (task, rev));
        true
    }

    /// The task as sent to `agent` on its current session, if it was and is
    /// not settled yet.
    pub fn in_flight(&self, agent: &Uuid, task: &Uuid) -> Option<(Task, i64)> {
        self.lock()
            .get(agent)
            .and_then(|c| c.in_flight.get(task).cloned())
    }

    /// The task changed in the store (it started): keep the copy current.
    pub fn refresh(&self, task: Task, rev: i64) {
        if let Some(c) = self.lock().get_mut(&task.agent_uuid) {
            if let Some(slot) = c.in_flight.get_mut(&task.id) {
                *slot = (task, rev);
            }
        }
    }

    pub fn forget(&self, agent: &Uuid, task: &Uuid) {
        if let Some(c) = self.lock().get_mut(agent) {
            c.in_flight.remove(task);
        }
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
