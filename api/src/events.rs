//! Fans persisted events out to GraphQL subscribers (DESIGN.md §6).
//!
//! Events are rows written in the transaction of the change they describe, numbered in commit
//! order. One reader per process follows the table — woken by an in-process notify after a local
//! commit, by `NOTIFY crm_events` from other processes on PostgreSQL, and by a poll every
//! second otherwise — and broadcasts what it reads. A subscriber that names `afterSeq` first
//! replays from the table and then continues live; one that falls behind the broadcast re-reads
//! from the table, so a slow client misses nothing and a fast one costs no queries.

use crm_store::{
    Db,
    effects::{self, EVENT_CHANNEL, Event},
};
use futures_util::{Stream, stream};
use std::{
    collections::VecDeque,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};
use tokio::sync::{Notify, broadcast};

/// Events read per statement.
const BATCH: usize = 500;

/// The process's event reader and its broadcast.
#[derive(Debug, Clone)]
pub struct EventHub {
    db: Db,
    sender: broadcast::Sender<Arc<Event>>,
    /// The seq of the newest event broadcast (or the head at start).
    last: Arc<AtomicI64>,
}

impl EventHub {
    /// A hub over `db` (not yet reading: see [`EventHub::run_until`]).
    pub fn new(db: Db) -> Self {
        let (sender, _) = broadcast::channel(1024);
        Self {
            db,
            sender,
            last: Arc::new(AtomicI64::new(-1)),
        }
    }

    /// Reads and broadcasts new events until `shutdown` resolves.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let wake = Arc::new(Notify::new());
        let listener = {
            let (db, wake) = (self.db.clone(), wake.clone());
            tokio::spawn(async move {
                loop {
                    if let Err(error) = db.listen(EVENT_CHANNEL, || wake.notify_one()).await {
                        tracing::warn!(%error, "Event notifications lost; polling until reconnected.");
                    } else {
                        break; // This backend has no notifications.
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        let mut last = match effects::head(&self.db).await {
            Ok(head) => head,
            Err(error) => {
                tracing::error!(%error, "Cannot read the event head; starting from the beginning.");
                0
            }
        };
        self.last.store(last, Ordering::SeqCst);
        loop {
            // Waiting for a local commit starts before the read: a commit between the read and
            // the wait would otherwise go unnoticed until the next poll, a second later.
            let local = effects::event_wake().notified();
            tokio::pin!(local);
            local.as_mut().enable();
            match effects::events_after(&self.db, None, last, BATCH).await {
                Ok(events) => {
                    let full = events.len() == BATCH;
                    for event in events {
                        last = event.seq;
                        self.last.store(last, Ordering::SeqCst);
                        // No receiver is fine: nobody is subscribed.
                        let _ = self.sender.send(Arc::new(event));
                    }
                    if full {
                        continue;
                    }
                }
                Err(error) => tracing::warn!(%error, "Cannot read events."),
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = wake.notified() => {},
                () = &mut local => {},
                () = tokio::time::sleep(Duration::from_secs(1)) => {},
            }
        }
        listener.abort();
    }

    /// The events of `topics` after `after_seq` (replayed from the store), then live; without
    /// `after_seq`, only those from now on.
    pub fn stream(
        &self,
        topics: &'static [&'static str],
        after_seq: Option<i64>,
    ) -> impl Stream<Item = Arc<Event>> + Send + use<> {
        struct State {
            db: Db,
            topics: &'static [&'static str],
            receiver: broadcast::Receiver<Arc<Event>>,
            last: i64,
            backlog: VecDeque<Arc<Event>>,
            catch_up: bool,
            skip_to: i64,
        }
        // Subscribe before reading the head, so nothing falls between the two.
        let receiver = self.sender.subscribe();
        let state = State {
            db: self.db.clone(),
            topics,
            receiver,
            last: after_seq.unwrap_or_else(|| self.last.load(Ordering::SeqCst).max(0)),
            backlog: VecDeque::new(),
            catch_up: after_seq.is_some(),
            skip_to: 0,
        };
        stream::unfold(state, |mut state| async move {
            loop {
                if let Some(event) = state.backlog.pop_front() {
                    if event.seq > state.last {
                        state.last = event.seq;
                        return Some((event, state));
                    }
                    continue;
                }
                if state.catch_up {
                    let one = match state.topics {
                        [topic] => Some(*topic),
                        _ => None,
                    };
                    match effects::events_after(&state.db, one, state.last, BATCH).await {
                        Ok(events) if !events.is_empty() => {
                            // Past everything read, also what other topics hold.
                            if let Some(last) = events.last() {
                                state.skip_to = state.skip_to.max(last.seq);
                            }
                            state.backlog.extend(
                                events
                                    .into_iter()
                                    .filter(|e| state.topics.contains(&e.topic.as_str()))
                                    .map(Arc::new),
                            );
                            if state.backlog.is_empty() {
                                state.last = state.skip_to;
                            }
                            continue;
                        }
                        Ok(_) => state.catch_up = false,
                        Err(error) => {
                            tracing::warn!(%error, "Cannot replay events; ending the subscription.");
                            return None;
                        }
                    }
                }
                match state.receiver.recv().await {
                    Ok(event)
                        if state.topics.contains(&event.topic.as_str())
                            && event.seq > state.last =>
                    {
                        state.last = event.seq;
                        return Some((event, state));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => state.catch_up = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }
}
