//! Following a session's event log: replay from a seq, then go live, with no gap and no
//! duplicate. Every event comes from the log itself (the head watch only says "there is
//! more"), so the switch from replay to live cannot lose or repeat one.

use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, watch};

use crate::event_log::{EventLog, HeadWatch, StoredEvent};

/// Events read from the log per step.
const PAGE: usize = 256;
/// Events buffered between the reader and a slow consumer.
const BUFFER: usize = 64;

/// Streams the session's events after `after` (of `types`, when given) until the consumer
/// goes away, `shutdown` turns true, or retention drops events the consumer has not seen.
pub fn follow(
    log: Arc<EventLog>,
    session: String,
    after: u64,
    types: Option<Vec<String>>,
    mut heads: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = StoredEvent> + Send + Sync + 'static {
    let (tx, mut rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let mut cursor = after;
        loop {
            if *shutdown.borrow() {
                return;
            }
            // Marks the head as seen before reading, so an append racing this read still
            // wakes the wait below.
            heads.borrow_and_update();
            let page = match log.read(&session, cursor, PAGE, types.as_deref(), PAGE * 16) {
                Ok(Ok(page)) => page,
                Ok(Err(expired)) => {
                    tracing::info!(%session, cursor, oldest = expired.oldest, "event stream fell behind retention; closing it");
                    return;
                }
                Err(e) => {
                    tracing::error!(%session, error = %e, "event stream could not read the log");
                    return;
                }
            };
            let progressed = page.scanned_to > cursor;
            cursor = page.scanned_to;
            for event in page.events {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if progressed {
                continue;
            }
            tokio::select! {
                changed = heads.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

type Followed = Pin<Box<dyn Stream<Item = StoredEvent> + Send + Sync>>;

/// Streams the events of every session that become durable from now on, merged (each
/// session's in seq order), including sessions created while it runs, from their first
/// event. Ends like [`follow`]; also when it falls so far behind on new sessions that it
/// could miss one (the consumer reopens it and pulls each session from its last seq).
pub fn follow_every(
    log: Arc<EventLog>,
    types: Option<Vec<String>>,
    shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = StoredEvent> + Send + Sync + 'static {
    let (now, mut opened) = log.watch_every();
    let mut stop = shutdown.clone();
    let start = move |watch: HeadWatch| -> Followed {
        Box::pin(follow(
            log.clone(),
            watch.session,
            watch.head,
            types.clone(),
            watch.heads,
            shutdown.clone(),
        ))
    };
    let mut sessions = futures_util::stream::SelectAll::new();
    for watch in now {
        sessions.push(start(watch));
    }
    let (tx, mut rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        while !*stop.borrow() {
            tokio::select! {
                Some(event) = sessions.next(), if !sessions.is_empty() => {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                watch = opened.recv() => match watch {
                    Ok(watch) => sessions.push(start(watch)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "stream of every session fell behind on new sessions; closing it");
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = stop.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
