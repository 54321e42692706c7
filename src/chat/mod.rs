//! The chat gateway: who is asking, which thread, what the model server says, what it cost.

pub mod upstream;
pub mod usage;

use std::sync::Arc;

use serde_json::Value;

use crate::clock::Clock;
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
}

impl Caller {
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
}

/// A time-ordered id: `{prefix}_{uuidv7 hex}`.
pub fn ordered_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

impl Chat {
    /// A gateway over `store` sending at most `history_messages` earlier messages upstream.
    pub fn new(store: Store, clock: Clock, upstream: Upstream, history_messages: i64) -> Self {
        Self {
            usage: usage::Usage::new(store.clone(), clock.clone()),
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
        let now = self.clock.now_ms();
        let (thread, new, mut history) = match thread_id {
            Some(id) => {
                let scope = ThreadScope::Org(caller.org_id.clone());
                let t = self
                    .store
                    .thread(id, &scope)
                    .await?
                    .filter(|t| caller.may_continue(t))
                    .ok_or(ChatError::ThreadNotFound)?;
                let history = self
                    .store
                    .recent_messages(&t.id, self.history_messages)
                    .await?
                    .into_iter()
                    .map(|m| Turn {
                        role: m.role,
                        content: m.content,
                    })
                    .collect();
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

    /// Stores the exchange once the answer is complete, and counts it.
    pub async fn finish(
        &self,
        p: &Prepared,
        answer: String,
        tokens: Tokens,
    ) -> Result<Message, ChatError> {
        let answer = Message {
            id: ordered_id("msg"),
            thread_id: p.thread.id.clone(),
            role: "assistant".into(),
            content: answer,
            created_at: self.clock.now_ms().max(p.question.created_at),
        };
        self.store
            .store_exchange(&Exchange {
                thread: &p.thread,
                new: p.new,
                question: &p.question,
                answer: &answer,
            })
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ChatError::ThreadNotFound,
                other => ChatError::Store(other),
            })?;
        self.usage
            .count(&p.caller.org_id, p.caller.key_id.as_deref(), tokens);
        Ok(answer)
    }

    /// Asks the model server.
    pub async fn ask(
        &self,
        p: &Prepared,
        context: Option<&Value>,
    ) -> Result<upstream::Pieces, ChatError> {
        Ok(self
            .upstream
            .answer(&p.history, context, p.caller.user_id.as_deref())
            .await?)
    }
}
