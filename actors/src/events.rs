//! `session:<id>/events`: the one writer of a session's event log. It numbers events (no gap,
//! no repeat, also across restarts: the next seq is read back from the log when it starts),
//! makes each batch durable before it answers, wakes readers through the log's head watch,
//! and applies retention.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::directory::{self, ActorKind, SessionLink};
use crate::error::Result;
use crate::event_log::{EventLog, NewEvent};
use crate::model::SessionId;
use crate::services::Shared;

/// How many of the newest events have their idempotency keys checked at start: more than one
/// batch can hold.
const RESTORE_TAIL: usize = 4096;
/// How often retention looks for expired events.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How long recorded events (acks, statuses, group changes) wait for their flush, so that a
/// burst of them costs one disk sync rather than one per mailbox turn: syncs at that rate
/// slowed the WhatsApp client's own store writes, and with them every send. Messages are
/// appended, and flushed at once.
const RECORD_FLUSH_DELAY: Duration = Duration::from_millis(20);

pub enum EventsMsg {
    /// Appends a batch, durable before the answer (the newest seq). On an error, what was
    /// written stays, and a redelivery of the batch appends only the rest.
    Append(Vec<NewEvent>, RpcReplyPort<Result<u64>>),
    /// Appends without anyone waiting; failures are logged. Made durable (and visible to
    /// readers) by the next flush, at most `RECORD_FLUSH_DELAY` later, one flush for every
    /// record queued before it.
    Record(Vec<NewEvent>),
    /// Flushes what `Record` appended and shows it to readers.
    Flush,
    /// Drops events older than the retention.
    Sweep,
    Inspect(RpcReplyPort<serde_json::Value>),
    #[cfg(feature = "test-server")]
    Crash,
}

pub struct EventsActor;

pub struct EventsArgs {
    pub services: Shared,
    pub id: SessionId,
    pub link: Arc<SessionLink>,
}

pub struct EventsState {
    services: Shared,
    log: Arc<EventLog>,
    id: SessionId,
    /// The newest seq in the log.
    head: u64,
    /// A `Flush` is queued for records appended since the last flush.
    flush_queued: bool,
    appended: u64,
    messages: Arc<AtomicU64>,
}

impl EventsState {
    /// Writes `events` after the head; not yet durable, not yet shown to readers.
    fn write(&mut self, events: &[NewEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let stored = match self.log.append(self.id.as_str(), self.head + 1, events) {
            Ok(stored) => stored,
            Err(e) => {
                self.keep_what_was_written(events.len());
                return Err(e);
            }
        };
        if let Some(last) = stored.last() {
            self.head = last.seq;
            self.appended += stored.len() as u64;
            self.services
                .telemetry
                .events_appended
                .inc_by(stored.len() as u64);
        }
        Ok(())
    }

    /// After a failed write, the events it did write stay in the log with their keys: the head
    /// moves past them, so no later event takes their seqs, and a redelivery of the same
    /// WhatsApp messages skips them as logged.
    fn keep_what_was_written(&mut self, attempted: usize) {
        let session = self.id.as_str();
        match self.log.last_seq(session) {
            Ok(head) => self.head = self.head.max(head),
            Err(e) => tracing::error!(session, error = %e, "cannot read the log's head back"),
        }
        if let Err(e) = self.log.restore_keys(session, attempted) {
            tracing::error!(session, error = %e, "cannot restore the keys of a failed write");
        }
    }

    /// Makes everything written durable, then lets readers see it: a reader never sees an
    /// event a crash could still take back (and whose seq would then be reused).
    async fn flush(&mut self) -> Result<()> {
        self.log.flush().await?;
        self.log.publish_head(self.id.as_str(), self.head);
        Ok(())
    }

    async fn append(&mut self, events: &[NewEvent]) -> Result<u64> {
        self.write(events)?;
        self.flush().await?;
        Ok(self.head)
    }

    fn sweep(&self) {
        let retention = self.services.settings.events.retention.as_secs();
        let cutoff = crate::unix_now().saturating_sub(retention);
        match self.log.expire(self.id.as_str(), cutoff) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(session = %self.id, dropped = n, "events past retention dropped")
            }
            Err(e) => tracing::error!(session = %self.id, error = %e, "retention sweep failed"),
        }
    }
}

impl Actor for EventsActor {
    type Msg = EventsMsg;
    type State = EventsState;
    type Arguments = EventsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: EventsArgs,
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        let name = directory::child_name(args.id.as_str(), ActorKind::Events);
        let messages = args.services.directory.starting(&name, ActorKind::Events);
        let log = args.services.events.clone();
        let head = log.last_seq(args.id.as_str())?;
        // A crash can cut between the last batch's events and their keys.
        let restored = log.restore_keys(args.id.as_str(), RESTORE_TAIL)?;
        if restored > 0 {
            tracing::info!(session = %args.id, restored, "restored idempotency keys of the log's tail");
        }
        args.services.directory.running(&name, myself.get_cell());
        args.link
            .publish_child(ActorKind::Events, Some(myself.get_cell()));
        Ok(EventsState {
            services: args.services,
            log,
            id: args.id,
            head,
            flush_queued: false,
            appended: 0,
            messages,
        })
    }

    /// A stop (shutdown, restart, delete) never leaves recorded events waiting for a flush
    /// that will not come.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        if state.flush_queued {
            state.flush().await?;
        }
        Ok(())
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        // Records a crashed predecessor wrote but did not flush are shown now.
        state.flush().await?;
        state.sweep();
        myself.send_interval(SWEEP_EVERY, || EventsMsg::Sweep);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        state.messages.fetch_add(1, Ordering::Relaxed);
        match msg {
            EventsMsg::Append(events, reply) => {
                let result = state.append(&events).await;
                if let Err(e) = &result {
                    tracing::error!(session = %state.id, error = %e, "could not append events");
                }
                let _ = reply.send(result);
            }
            EventsMsg::Record(events) => {
                if let Err(e) = state.write(&events) {
                    tracing::error!(session = %state.id, error = %e, "could not append events");
                } else if !state.flush_queued {
                    state.flush_queued = true;
                    myself.send_after(RECORD_FLUSH_DELAY, || EventsMsg::Flush);
                }
            }
            EventsMsg::Flush => {
                state.flush_queued = false;
                if let Err(e) = state.flush().await {
                    tracing::error!(session = %state.id, error = %e, "could not flush events");
                }
            }
            EventsMsg::Sweep => state.sweep(),
            EventsMsg::Inspect(reply) => {
                let _ = reply.send(serde_json::json!({
                    "session": state.id.as_str(),
                    "head": state.head,
                    "appended_since_start": state.appended,
                    "floor": state.log.floor(state.id.as_str()).unwrap_or(0),
                }));
            }
            #[cfg(feature = "test-server")]
            EventsMsg::Crash => panic!("crash requested through the test-only admin trigger"),
        }
        Ok(())
    }
}
