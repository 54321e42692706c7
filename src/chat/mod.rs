//! The chat gateway: who is asking, which thread, what the model server says, what it cost.

pub mod upstream;
pub mod usage;

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::ids::ThreadId;
use crate::store::{Exchange, Message, Store, StoreError, Thread, ThreadScope};
use upstream::{Tokens, Turn, Upstream};

/// The largest accepted message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// The largest accepted `context`, serialised, in bytes.
pub const MAX_CONTEXT_BYTES: usize = 8 * 1024;

/// Who is chatting: always an organization (through a key or a widget), maybe a person.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The organization paying for it.
    pub org_id: String,
    /// The API key, when one was used.
    pub key_id: Option<String>,
    /// The signed-in person, whose own thread it becomes.
    pub user_id: Option<String>,
    /// A widget visitor (`v:vis_…` or `u:{user_id}`), whose own thread it becomes.
    pub visitor: Option<String>,
    /// The widget, for a visitor.
    pub widget_id: Option<String>,
    /// The key's spend budgets, when a key with budgets is used.
    pub key_budgets: Option<Vec<crate::domain::budget::Budget>>,
    /// The OAuth client whose token the chat came with (its budgets apply, and the ledger
    /// names it).
    pub client_id: Option<String>,
}

impl Caller {
    /// The end user a chat is for, whose own budgets apply: the widget visitor (`v:vis_…`
    /// or `u:{user_id}`), else the signed-in person (`u:{user_id}`).
    pub fn end_user(&self) -> Option<String> {
        self.visitor
            .clone()
            .or_else(|| self.user_id.as_ref().map(|u| format!("u:{u}")))
    }

    /// The threads this caller may continue: a person's or a visitor's own in this
    /// organization, or the organization's threads that belong to neither.
    fn may_continue(&self, t: &Thread) -> bool {
        t.org_id == self.org_id && t.user_id == self.user_id && t.visitor == self.visitor
    }
}

/// Why a chat request failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// No such thread for this caller.
    #[error("thread not found")]
    ThreadNotFound,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The model server failed.
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
}

/// A request ready for the model server.
pub struct Prepared {
    /// The thread (not yet stored when new).
    pub thread: Thread,
    /// Whether the thread is new.
    pub new: bool,
    /// The history to send, the new message last.
    pub history: Vec<Turn>,
    /// The new message.
    pub question: Message,
    /// The caller.
    pub caller: Caller,
}

/// The gateway.
#[derive(Clone)]
pub struct Chat {
    store: Store,
    clock: Clock,
    /// The model server.
    pub upstream: Arc<Upstream>,
    history_messages: i64,
    /// Requests and tokens, written behind.
    pub usage: usage::Usage,
    /// Finished exchanges on their way to the group commit.
    exchanges: mpsc::Sender<Pending>,
    /// Recent history per thread id, as of a revision this instance stored.
    histories: moka::sync::Cache<String, Arc<History>>,
}

/// A thread's last messages (at most `history_messages`) as of `revision`.
struct History {
    revision: i64,
    turns: Vec<Turn>,
}

/// Bytes of history the cache holds at most.
const HISTORY_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// An exchange waiting for its commit, and who to tell (with the thread's new revision).
type Pending = (Exchange, oneshot::Sender<Result<i64, StoreError>>);

/// Exchanges one transaction stores at most.
const GROUP_COMMIT_MAX: usize = 256;

/// Stores exchanges as they come, each batch in one transaction: while one commits, the next
/// gathers, so concurrent chats share a commit (and its `fsync`) instead of queueing for one
/// each. Every caller hears back only after the commit that holds its exchange.
async fn group_commit(store: Store, mut rx: mpsc::Receiver<Pending>) {
    let mut pending = Vec::with_capacity(GROUP_COMMIT_MAX);
    while crate::batch::next_batch(&mut rx, &mut pending, GROUP_COMMIT_MAX).await > 0 {
        let (batch, replies): (Vec<Exchange>, Vec<_>) = pending.drain(..).unzip();
        let batch: Arc<[Exchange]> = batch.into();
        let results = match store.store_exchanges(batch.clone()).await {
            Ok(results) => results,
            // One exchange may have failed them all: try each alone, so it fails alone.
            Err(e) if batch.len() == 1 => vec![Err(e)],
            Err(_) => {
                let mut results = Vec::with_capacity(batch.len());
                for x in batch.iter() {
                    let alone: Arc<[Exchange]> = Arc::new([x.clone()]);
                    results.push(match store.store_exchanges(alone).await {
                        Ok(mut r) => r.pop().unwrap_or(Err(StoreError::NotFound)),
                        Err(e) => Err(e),
                    });
                }
                results
            }
        };
        for (reply, result) in replies.into_iter().zip(results) {
            // A caller that went away no longer waits; its exchange is stored all the same.
            let _ = reply.send(result);
        }
    }
}

/// A time-ordered id: `{prefix}_{uuidv7 hex}`.
pub fn ordered_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

impl Chat {
    /// A gateway over `store` sending at most `history_messages` earlier messages upstream.
    /// Starts the group-commit task (call it inside the runtime).
    pub fn new(store: Store, clock: Clock, upstream: Upstream, history_messages: i64) -> Self {
        let (exchanges, rx) = mpsc::channel(4 * GROUP_COMMIT_MAX);
        tokio::spawn(group_commit(store.clone(), rx));
        let histories = moka::sync::Cache::builder()
            .max_capacity(HISTORY_CACHE_BYTES)
            .weigher(|_: &String, h: &Arc<History>| {
                let bytes: usize = h.turns.iter().map(|t| t.content.len() + 64).sum();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .time_to_idle(std::time::Duration::from_secs(600))
            .build();
        Self {
            usage: usage::Usage::new(store.clone(), clock.clone()),
            exchanges,
            histories,
            store,
            clock,
            upstream: Arc::new(upstream),
            history_messages,
        }
    }

    /// Finds or starts the thread and gathers its history.
    pub async fn prepare(
        &self,
        caller: Caller,
        message: String,
        thread_id: Option<&str>,
    ) -> Result<Prepared, ChatError> {
        let thread = match thread_id {
            Some(id) => {
                let scope = ThreadScope::Org(caller.org_id.clone());
                Some(
                    self.store
                        .thread(id, &scope)
                        .await?
                        .ok_or(ChatError::ThreadNotFound)?,
                )
            }
            None => None,
        };
        self.prepare_in(caller, message, thread).await
    }

    /// [`Chat::prepare`] with the thread already read (`None`: start one).
    pub async fn prepare_in(
        &self,
        caller: Caller,
        message: String,
        thread: Option<Thread>,
    ) -> Result<Prepared, ChatError> {
        let now = self.clock.now_ms();
        let (thread, new, mut history) = match thread {
            Some(t) => {
                if !caller.may_continue(&t) {
                    return Err(ChatError::ThreadNotFound);
                }
                let history = match self.histories.get(&t.id) {
                    // Stored by this instance at this very revision: nothing came since.
                    Some(h) if h.revision == t.revision => h.turns.clone(),
                    _ => self
                        .store
                        .recent_messages(&t.id, self.history_messages)
                        .await?
                        .into_iter()
                        .map(|m| Turn {
                            role: m.role,
                            content: m.content,
                        })
                        .collect(),
                };
                (t, false, history)
            }
            None => {
                let title: String = message.chars().take(80).collect();
                let t = Thread {
                    id: ordered_id("thr"),
                    org_id: caller.org_id.clone(),
                    user_id: caller.user_id.clone(),
                    key_id: caller.key_id.clone(),
                    visitor: caller.visitor.clone(),
                    widget_id: caller.widget_id.clone(),
                    title,
                    created_at: now,
                    updated_at: now,
                    revision: 0,
                };
                (t, true, Vec::new())
            }
        };
        history.push(Turn {
            role: "user".into(),
            content: message.clone(),
        });
        let question = Message {
            id: ordered_id("msg"),
            thread_id: thread.id.clone(),
            role: "user".into(),
            content: message,
            created_at: now,
        };
        Ok(Prepared {
            thread,
            new,
            history,
            question,
            caller,
        })
    }

    /// Stores the exchange once the answer is complete (with its cost in the ledger, in the
    /// same commit), and counts it.
    pub async fn finish(
        &self,
        p: &Prepared,
        answer: String,
        tokens: Tokens,
        spend: Option<crate::store::LedgerRow>,
    ) -> Result<Message, ChatError> {
        let answer = Message {
            id: ordered_id("msg"),
            thread_id: p.thread.id.clone(),
            role: "assistant".into(),
            content: answer,
            created_at: self.clock.now_ms().max(p.question.created_at),
        };
        let x = Exchange {
            thread: p.thread.clone(),
            new: p.new,
            question: p.question.clone(),
            answer: answer.clone(),
            spend,
        };
        let (tx, rx) = oneshot::channel();
        let gone = || StoreError::Other("the chat writer stopped".into());
        self.exchanges.send((x, tx)).await.map_err(|_| gone())?;
        let revision = rx.await.map_err(|_| gone())?.map_err(|e| match e {
            StoreError::NotFound => ChatError::ThreadNotFound,
            other => ChatError::Store(other),
        })?;
        self.remember(p, &answer, revision);
        self.usage
            .count(&p.caller.org_id, p.caller.key_id.as_deref(), tokens);
        Ok(answer)
    }

    /// Caches the thread's history after `p`'s exchange, when it is known whole: the exchange
    /// moved the thread from the revision its history was read at to the next one, so no
    /// other exchange (from here or another instance) came in between.
    fn remember(&self, p: &Prepared, answer: &Message, revision: i64) {
        let base = if p.new { 0 } else { p.thread.revision };
        let keep = usize::try_from(self.history_messages).unwrap_or(0);
        if revision != base + 1 || keep == 0 {
            self.histories.invalidate(&p.thread.id);
            return;
        }
        let answer = Turn {
            role: answer.role.clone(),
            content: answer.content.clone(),
        };
        let skip = (p.history.len() + 1).saturating_sub(keep);
        let turns: Vec<Turn> = p
            .history
            .iter()
            .chain(std::iter::once(&answer))
            .skip(skip)
            .cloned()
            .collect();
        self.histories
            .insert(p.thread.id.clone(), Arc::new(History { revision, turns }));
    }

    /// Forgets a deleted thread's cached history.
    pub fn forget(&self, thread_id: &str) {
        self.histories.invalidate(thread_id);
    }

    /// The threads `scope` may see, most recent first (at most 100).
    pub async fn threads(&self, scope: &ThreadScope) -> Result<Vec<Thread>, ChatError> {
        Ok(self.store.threads(scope, 100).await?)
    }

    /// One thread `scope` may see, with its last 1,000 messages, oldest first.
    pub async fn thread(
        &self,
        id: &ThreadId,
        scope: &ThreadScope,
    ) -> Result<(Thread, Vec<Message>), ChatError> {
        let thread = self
            .store
            .thread(id.as_str(), scope)
            .await?
            .ok_or(ChatError::ThreadNotFound)?;
        let messages = self.store.recent_messages(id.as_str(), 1000).await?;
        Ok((thread, messages))
    }

    /// Deletes a thread `scope` may see, with its messages and its cached history.
    pub async fn delete_thread(&self, id: &ThreadId, scope: &ThreadScope) -> Result<(), ChatError> {
        self.store
            .delete_thread(id.as_str(), scope)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ChatError::ThreadNotFound,
                other => other.into(),
            })?;
        self.forget(id.as_str());
        Ok(())
    }

    /// Asks the model server: `model`, for an answer of at most `max_tokens` when given.
    pub async fn ask(
        &self,
        p: &Prepared,
        context: Option<&Value>,
        model: &str,
        max_tokens: Option<u32>,
    ) -> Result<upstream::Pieces, ChatError> {
        Ok(self
            .upstream
            .answer(
                &p.history,
                context,
                p.caller.user_id.as_deref(),
                model,
                max_tokens,
            )
            .await?)
    }

    /// Bytes and count of the messages sent upstream (for a reservation's estimate).
    pub fn prompt_size(p: &Prepared) -> (u64, u64) {
        let bytes = p.history.iter().map(|t| t.content.len() as u64).sum();
        (bytes, p.history.len() as u64)
    }
}
